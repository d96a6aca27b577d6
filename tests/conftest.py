"""Checks made once, before any test runs."""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def stale_extensions(root: Path = ROOT) -> list[str]:
    """Sources newer than the C extension compiled from them (``setup.py``).

    An editable install builds ``minipbx/sip`` into the source tree, where the extensions
    shadow the ``.py`` files: a test run after an edit would test the old code.
    """
    stale = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for ext in sorted((root / "minipbx").rglob(f"*{suffix}")):
            source = ext.with_name(ext.name.removesuffix(suffix) + ".py")
            if source.exists() and source.stat().st_mtime > ext.stat().st_mtime:
                stale.append(str(source.relative_to(root)))
    return stale


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_extensions()
    if stale:
        pytest.exit(
            f"the compiled SIP core is older than {', '.join(stale)}: rebuild it with "
            "`.venv/bin/pip install -e .` (scripts/test does), or test pure Python with "
            "`MINIPBX_PURE_PYTHON=1 .venv/bin/pip install -e .`",
            returncode=4,
        )
