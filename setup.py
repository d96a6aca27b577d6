"""Build hook: compile the sans-IO SIP core (``minipbx/sip``) to C with mypyc.

Everything else about the package is declared in ``pyproject.toml``. The SIP core is plain,
fully typed Python; mypyc turns it into C extension modules, which parse SIP messages about
1.7 times as fast (``bench/parse.py``) and lift the whole server's registrations and calls
per second by about a quarter to a third (``bench/sip_load.py``). The ``.py`` files stay
the source of truth and run unchanged when the extensions are absent:

- ``MINIPBX_PURE_PYTHON=1`` at install time skips the compilation;
- without a C compiler or the Python headers, the build says so and installs pure Python
  rather than failing the install.

An editable install (``pip install -e .``, what ``scripts/test`` does) builds the extensions
into the source tree, where they shadow the ``.py`` files: after editing ``minipbx/sip``,
install again (``tests/conftest.py`` stops a test run that would test stale extensions).
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
SIP = HERE / "minipbx" / "sip"
SOURCES = sorted(str(p.relative_to(HERE)) for p in SIP.glob("*.py"))


class OptionalBuildExt(build_ext):
    """Compile in parallel; when compiling fails, install pure Python instead."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler or header: CCompilerError, OSError...
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        print(
            f"minipbx: compiling minipbx/sip failed ({exc}); installing pure Python, "
            "which works the same, only slower",
            file=sys.stderr,
        )
        for output in self.get_outputs():  # no half-built set: all compiled or none
            Path(output).unlink(missing_ok=True)
        self.extensions = []


# setuptools runs this file for metadata too; only these commands build extensions.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def ext_modules() -> list[Any]:
    if not BUILDS & set(sys.argv[1:]):
        return []
    if os.environ.get("MINIPBX_PURE_PYTHON", "") not in ("", "0"):
        # An earlier editable install may have left extensions in the source tree; they
        # would shadow the .py files this install asks for.
        for suffix in EXTENSION_SUFFIXES:
            for ext in [*HERE.glob(f"minipbx_sip__mypyc*{suffix}"), *SIP.glob(f"*{suffix}")]:
                ext.unlink(missing_ok=True)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build requirements (e.g. --no-build-isolation)
        print("minipbx: mypyc not available; installing pure Python", file=sys.stderr)
        return []
    # One shared library (minipbx_sip__mypyc...so) beside the package, one C file per
    # module so the parallel build has work for every core.
    try:
        return list(mypycify(SOURCES, group_name="minipbx_sip", multi_file=True))
    except (Exception, SystemExit) as exc:  # mypyc reports its own errors, then exits
        print(f"minipbx: mypyc failed ({exc}); installing pure Python", file=sys.stderr)
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
