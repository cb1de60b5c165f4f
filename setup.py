"""Build script: the package is pure Python until the compiled core lands (see _compat)."""

from setuptools import setup

setup()
