"""Build script: the compiled core ``omniq_fast._core`` on CPython, pure Python elsewhere.

``OMNIQ_FAST_NO_EXTENSIONS=1`` (any non-empty value) builds without the extension, and so
does any interpreter but CPython: the package then runs on its pure-Python twin
(``omniq_fast/_core_py.py``). Otherwise a failure to build the extension fails the install,
naming that variable, rather than quietly installing the slower twin.
"""

import os
import platform
import sys
from typing import NoReturn

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("OMNIQ_FAST_NO_EXTENSIONS"))
CPYTHON = platform.python_implementation() == "CPython"


def fail(exc: Exception) -> NoReturn:
    sys.exit(
        f"omniq-fast: building the compiled core failed ({exc}).\n"
        "Install a C compiler and the Python headers, or install the pure-Python package "
        "with OMNIQ_FAST_NO_EXTENSIONS=1 (its hot path is 2-40x slower: "
        "benchmarks/test_micro.py)."
    )


class BuildCompiledCore(build_ext):
    """build_ext whose compiler failures fail the install with a way out."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # the compiler's own output is already above
            fail(exc)


def extensions() -> list:
    if NO_EXTENSIONS or not CPYTHON:
        why = "OMNIQ_FAST_NO_EXTENSIONS is set" if NO_EXTENSIONS else "not CPython"
        print(f"omniq-fast: pure-Python build ({why})", file=sys.stderr)
        return []
    print("omniq-fast: building the compiled core (Cython)", file=sys.stderr)
    try:
        from Cython.Build import cythonize

        # Compiler directives are in the .pyx header, next to the code they govern.
        return cythonize([Extension("omniq_fast._core", ["omniq_fast/_core.pyx"])])
    except Exception as exc:
        fail(exc)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildCompiledCore})
