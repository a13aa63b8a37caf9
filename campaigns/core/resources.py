"""Where the shipped files live: `config/` and `migrations/`.

In a wheel they are copied into ``campaigns/_shipped/``; in a source checkout (editable install,
tests) they sit at the top of the repository. Both layouts are looked up, wheel first.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # campaigns/


def _shipped(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_shipped" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"wacamp is installed without its {name}/ folder (looked in {_PACKAGE_DIR})")


def config_dir() -> Path:
    """The folder holding `default.toml` and `pricing.toml`."""
    return _shipped("config")


def migrations_dir() -> Path:
    """The Alembic script folder (env.py and versions/)."""
    return _shipped("migrations")


def default_config_file() -> Path:
    return config_dir() / "default.toml"
