"""The docs point at things that exist: every repository path and module README.md and docs/*.md name.

Checked:
- a path whose first part is a top-level entry of the repository (`scheduler/sending/dispatch.py`,
  `deploy/wacamp-*.service`, `docs/running.md#exit-codes`), any path ending in `.py`, and any relative
  link climbing out of its folder (`../x.md`: it must stay inside the repository);
- a dotted name on one of the four packages (`scheduler.runs.due.PassGate`): each part a package or
  module, then (at most) one name the module defines; or a string the code uses as is (a logger name).
Not checked: absolute paths (`/etc/systemd/system/`: the machine's, not ours), other relative files
(`./wacamp.toml`, `demo/contacts.csv`: the user's).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("campaigns", "scheduler", "wacamp", "sandbox")
#: Dotted words that are file names, not modules (`wacamp.toml`, `sandbox.md`).
FILE_SUFFIXES = {"md", "toml", "db", "env", "py", "lock", "log", "csv", "json", "yaml", "html", "service"}

PATH_RE = re.compile(r"(?<![\w./:~*$-])((?:\.\./)*[\w.*-]+(?:/[\w.*-]+)+/?)")
DOTTED_RE = re.compile(r"(?<![\w./-])((?:" + "|".join(PACKAGES) + r")(?:\.[\w-]+)+)")


def documents() -> list[Path]:
    if not (REPO / "docs").is_dir():
        pytest.skip("docs/ is not shipped in the sdist: this test runs on a checkout")
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def top_level() -> set[str]:
    return {p.name for p in REPO.iterdir() if p.name not in {".git", ".venv"} and "cache" not in p.name}


def exists(ref: str, folder: Path) -> bool:
    for base in (REPO, folder):
        target = (base / ref.rstrip("/")).resolve()
        inside = target == REPO or REPO in target.parents
        if "*" in ref:
            if inside and any(target.parent.glob(target.name)):
                return True
        elif inside and target.exists():
            return True
    return False


def bad_paths(text: str, folder: Path) -> list[str]:
    """Repository paths in `text` (a document in `folder`) that do not exist."""
    roots = top_level()
    bad = []
    for match in PATH_RE.finditer(text):
        ref = match.group(1).rstrip(".")
        checked = ref.startswith("../") or ref.split("/")[0] in roots or ref.endswith(".py")
        if checked and not exists(ref, folder):
            bad.append(ref)
    return bad


@functools.cache
def module_names(path: Path) -> frozenset[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


@functools.cache
def code_strings() -> frozenset[str]:
    """Every string literal in the four packages (logger names are documented by their string)."""
    found: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return frozenset(found)


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    here = REPO / parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if (here / part).is_dir():
            here = here / part
            continue
        module = here / f"{part}.py"
        if not module.exists():
            init = here / "__init__.py"
            return init.exists() and i == len(parts) - 1 and part in module_names(init)
        rest = parts[i + 1 :]
        return not rest or (len(rest) == 1 and rest[0] in module_names(module))
    return True


def bad_modules(text: str) -> list[str]:
    """Dotted names on our packages in `text` that name no module, no attribute and no string of the code."""
    bad = []
    for match in DOTTED_RE.finditer(text):
        dotted = match.group(1).rstrip(".")
        if "-" in dotted or dotted.rsplit(".", 1)[-1] in FILE_SUFFIXES:
            continue
        if not resolves(dotted) and dotted not in code_strings():
            bad.append(dotted)
    return bad


def test_every_repository_path_the_docs_name_exists() -> None:
    bad = {doc.name: refs for doc in documents() if (refs := bad_paths(doc.read_text("utf-8"), doc.parent))}
    assert bad == {}


def test_every_module_the_docs_name_exists() -> None:
    bad = {doc.name: refs for doc in documents() if (refs := bad_modules(doc.read_text("utf-8")))}
    assert bad == {}


def test_the_checker_catches_old_paths_and_links_out_of_the_repository() -> None:
    text = (
        "`scheduler/dispatch.py` moved to `scheduler/sending/dispatch.py`; see [up](../../shared/x.md), "
        "`deploy/wacamp-*.service`, docs/running.md#exit-codes, `tests/x/gone.py`, `/etc/systemd/system/`, "
        "`./wacamp.toml`, 80 msg/s, `campaigns.cli`, `scheduler.runs.due.PassGate`, `wacamp.run_due`, "
        "`scheduler.sending.backoff.no_such_name`, `wacamp.toml`, `wacamp.db.run-due.lock`."
    )
    assert bad_paths(text, REPO / "docs") == ["scheduler/dispatch.py", "../../shared/x.md", "tests/x/gone.py"]
    assert bad_modules(text) == ["campaigns.cli", "scheduler.sending.backoff.no_such_name"]
