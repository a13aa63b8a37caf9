"""A wheel built from the repository, installed non-editable in a fresh virtualenv, works on its own.

This proves the packaging, not the code: the console script exists, `config/default.toml` ships
inside the wheel (`config show` needs it) and so do the migrations (`db upgrade` needs them).

The test must not need the network. So the wheel is installed with ``--no-deps``, and the fresh
virtualenv sees the *dependencies* (sqlalchemy, click, …) through a ``.pth`` file pointing at the
test environment's site-packages. Python appends that folder to ``sys.path`` after the fresh venv's
own site-packages, so ``campaigns`` is imported from the installed wheel; the test checks that. The
editable install of the repository in the test environment stays inert: its own ``.pth`` hook is
not run, because only ``.pth`` files directly inside a site directory are processed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WACAMP_", "PYTHON"))}
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtualenv holding the wheel of this repository."""
    root = tmp_path_factory.mktemp("install")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", root / "dist", REPO, cwd=root)
    (wheel,) = (root / "dist").glob("wacamp-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=root
    )
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root
    ).stdout.strip()
    Path(purelib, "wacamp_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python.parent


def test_the_installed_package_is_imported_from_the_wheel_not_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    where = run(
        installed / "python", "-c", "import campaigns; print(campaigns.__file__)", cwd=tmp_path
    ).stdout
    assert Path(where.strip()).is_relative_to(installed.parent)


def test_the_console_script_answers_help(installed: Path, tmp_path: Path) -> None:
    result = run(installed / "wacamp", "--help", cwd=tmp_path)
    assert "contacts" in result.stdout
    assert "db" in result.stdout


def test_the_shipped_defaults_are_inside_the_wheel(installed: Path, tmp_path: Path) -> None:
    settings = json.loads(run(installed / "wacamp", "config", "show", "--json", cwd=tmp_path).stdout)
    assert settings["whatsapp.version"]["value"] == "v23.0"
    assert settings["database.url"]["value"] == "sqlite:///wacamp.db"


def test_the_migrations_are_inside_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = {"WACAMP_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    run(installed / "wacamp", "db", "upgrade", cwd=tmp_path, env=env)
    current = json.loads(run(installed / "wacamp", "db", "current", "--json", cwd=tmp_path, env=env).stdout)
    assert current["up_to_date"] is True
