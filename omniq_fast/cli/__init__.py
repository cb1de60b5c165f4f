"""The ``omniq-fast`` command (also ``python -m omniq_fast``): a click group.

``worker`` runs handlers; ``queues``, ``stats``, ``pause``, ``resume``, ``retry-failed``,
``remove``, ``peek``, ``job``, ``groups``, ``publish`` and ``bench`` operate queues; ``demo``
runs the end-to-end demo. Errors a user can fix print one line and exit 1; usage errors
exit 2 (click's convention).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Optional, Sequence

import click
import redis

from .._compat import IMPLEMENTATION
from .._version import __version__
from ..errors import OmniqError
from .ops import groups, job, pause, peek, queues, remove, resume, retry_failed, stats
from .publish import bench, publish
from .worker import worker

__all__ = ["cli", "main"]


#: Commands whose modules need an optional extra: imported only when asked for, so the
#: rest of the CLI works with ``pip install omniq-fast`` alone.
_LAZY_COMMANDS = {
    "exporter": ("omniq_fast.exporter", "exporter"),
    "dashboard": ("omniq_fast.dashboard.command", "dashboard"),
}


class _Group(click.Group):
    """A group that loads the commands of :data:`_LAZY_COMMANDS` on first use (click's
    documented lazy-loading pattern); a missing extra becomes one clear error line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in _LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = _LAZY_COMMANDS[cmd_name]
        try:
            command: Any = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            message = str(exc)

            @click.command(cmd_name, context_settings={"ignore_unknown_options": True},
                           help=f"(unavailable: {message})")  # fmt: skip
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(message)

            return unavailable
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message=f"omniq-fast %(version)s ({IMPLEMENTATION})")
def cli() -> None:
    """omniq-fast: run workers and operate OmniQ queues."""


@cli.command()
@click.option("--redis-url", default=None, metavar="URL",
              help="Server to use (default: $REDIS_URL, else an embedded Valkey).")
@click.option("--jobs", type=int, default=10_000, show_default=True, help="How many jobs.")
def demo(redis_url: Optional[str], jobs: int) -> int:
    """Publish and consume a mix of jobs, then check them."""
    from ..demo import main as demo_main

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return demo_main(redis_url, jobs)


for _command in (worker, queues, stats, pause, resume, retry_failed, remove, peek, job,
                 groups, publish, bench):  # fmt: skip
    cli.add_command(_command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    try:
        status = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="omniq-fast", standalone_mode=False)  # fmt: skip
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except (redis.RedisError, OSError, OmniqError) as exc:
        # Found mid-command (the server went away, a refused operation): one line.
        click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        return 1
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
