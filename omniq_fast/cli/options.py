"""What every command shares: the server option, ``--json``, queue arguments, one-line
errors and the connection check."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
import redis

from ..client import Client
from ..errors import InvalidQueueName
from ..keys import validate_queue_name

__all__ = [
    "DEFAULT_REDIS_URL", "CliError", "redis_url_option", "json_option", "queue_argument",
    "check_queue", "connect", "shown_url", "print_json", "SIGNAL_EXIT", "WorkerConfig",
]

#: The server when neither ``--redis-url`` nor ``REDIS_URL`` is given.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: How long connecting may take before the server counts as unreachable.
CONNECT_TIMEOUT_S = 5.0

F = TypeVar("F", bound=Callable[..., Any])

#: Exit statuses a shell expects after these signals (128 + the signal number).
SIGNAL_EXIT: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class WorkerConfig:
    """A worker's resolved settings (command line over settings object over defaults)."""

    target_spec: str
    queues: list[str]
    redis_url: str
    options: dict[str, Any] = field(default_factory=dict)
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: Optional[int] = None
    metrics_host: str = "0.0.0.0"
    #: Set in children of a ``--processes`` supervisor: metrics go to the shared
    #: multiprocess directory, and the worker stops if the supervisor goes away.
    supervised: bool = False


class CliError(click.ClickException):
    """An error a user can fix (bad input, unreachable server): printed as one line,
    exit status 1."""

    exit_code = 1


def redis_url_option(f: F) -> F:
    """``--redis-url``, defaulting to ``$REDIS_URL``, else :data:`DEFAULT_REDIS_URL`."""
    return click.option(
        "--redis-url", envvar="REDIS_URL", default=DEFAULT_REDIS_URL, metavar="URL",
        show_default="$REDIS_URL, else " + DEFAULT_REDIS_URL,
        help="Server URL (redis://, rediss://, unix://); a cluster node works too.",
    )(f)  # fmt: skip


def json_option(f: F) -> F:
    """``--json``: machine-readable output instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
    )(f)


def check_queue(name: str) -> str:
    """A valid queue name, or a :class:`CliError` naming what is wrong."""
    try:
        return validate_queue_name(name)
    except InvalidQueueName as exc:
        raise CliError(f"invalid queue name {name!r}: {exc}") from None


def _queue_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(check_queue(v) for v in value)
    return None if value is None else check_queue(value)


def queue_argument(name: str = "queue", **kwargs: Any) -> Callable[[F], F]:
    """A ``QUEUE`` argument checked as a queue name before anything connects."""
    return click.argument(name, callback=_queue_callback, metavar=name.upper(), **kwargs)


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def connect(url: str) -> Client:
    """A client of the server at ``url``, checked to answer (a cluster is detected)."""
    try:
        client = Client(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    except ValueError as exc:  # redis-py's message for a URL it cannot read
        raise CliError(f"invalid --redis-url {shown_url(url)!r}: {exc}") from None
    try:
        client.redis.ping()  # the first use also finds out whether it is a cluster
    except (redis.RedisError, OSError) as exc:
        client.close()
        raise CliError(f"cannot reach the server at {shown_url(url)}: {exc}") from None
    return client


def print_json(data: Any, *, compact: bool = False) -> None:
    """``data`` as JSON on stdout (non-ASCII text kept as is)."""
    if compact:
        click.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
