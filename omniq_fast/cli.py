"""The ``omniq-fast`` command (also ``python -m omniq_fast``)."""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ._compat import IMPLEMENTATION
from ._version import __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="omniq-fast", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"omniq-fast {__version__} ({IMPLEMENTATION})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="publish and consume a mix of jobs, then check them")
    demo.add_argument(
        "--redis-url", help="server to use (default: $REDIS_URL, else an embedded Valkey)"
    )
    demo.add_argument("--jobs", type=int, default=10_000, help="how many jobs (default 10000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.redis_url, args.jobs)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
