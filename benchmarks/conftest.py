"""The micro-benchmarks use the test suite's twin fixture: both implementations get numbers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from twins import core  # noqa: E402,F401
