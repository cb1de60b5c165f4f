"""The connection and script plumbing every client operation builds on."""

from __future__ import annotations

import time
from types import ModuleType, TracebackType
from typing import Any, Optional, TypeVar

import redis as redis_py

from . import _compat
from .errors import InvalidArgument, ProtocolError, ReplyError, lease_error
from .keys import queue_anchor, validate_queue_name, wake_channel
from .options import check_int
from .scripts import script
from .transport import Transport

__all__ = ["ClientBase", "now_ms", "text"]

_Self = TypeVar("_Self", bound="ClientBase")


def now_ms() -> int:
    """Milliseconds since the epoch, as every script expects."""
    return time.time_ns() // 1_000_000


def text(item: object) -> str:
    """A reply item as str (replies are read undecoded)."""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


class ClientBase:
    """A connection to one OmniQ server (Redis or Valkey).

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with ACL
    user and password in it if needed; or pass a ready ``redis.Redis`` as ``redis=``
    (its ``decode_responses`` setting does not matter). Extra keyword arguments go to
    ``redis.Redis.from_url`` (``socket_timeout=...``). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        redis: Optional[redis_py.Redis] = None,
        client_name: Optional[str] = None,
        _core: Optional[ModuleType] = None,
        **redis_options: Any,
    ) -> None:
        if redis is not None and (url is not None or redis_options):
            raise InvalidArgument("pass either redis= or a url (with options), not both")
        self._owns_redis = redis is None
        if redis is None:
            if client_name is not None:
                redis_options["client_name"] = client_name
            # from_url lets the URL win over keyword options, so keywords alone (the
            # OmniqClient constructor) build the client directly.
            if url is None:
                redis = redis_py.Redis(**redis_options)
            else:
                redis = redis_py.Redis.from_url(url, **redis_options)
        self._core: ModuleType = _core if _core is not None else _compat
        self._transport = Transport(redis, self._core)

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> redis_py.Redis:
        """The underlying redis-py client (for plain reads and monitoring)."""
        return self._transport.redis

    def close(self) -> None:
        """Close the connections this client opened (not a ``redis=`` it was given)."""
        if self._owns_redis:
            self._transport.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @staticmethod
    def queue_base(queue_name: str) -> str:
        """``{queue}``, the prefix of every key of the queue."""
        return "{" + validate_queue_name(queue_name) + "}"

    # ------------------------------------------------------------------ internals

    def _run(self, name: str, anchor: str, *argv: bytes | str | int) -> Any:
        return self._transport.run_script(script(name), anchor, argv)

    def _wake_command(self, queue: str) -> bytes:
        """``PUBLISH {Q}:wake 1``: sent after queueing jobs, in the same write, so idle
        consumers pick them up at once. It changes no queue state."""
        return self._core.encode_command((b"PUBLISH", wake_channel(queue), b"1"))  # type: ignore[no-any-return]

    def _run_and_wake(self, name: str, queue: str, *argv: bytes | str | int) -> Any:
        """Run script ``name`` on ``queue`` and notify its wake channel in one round trip."""
        s = script(name)
        data = self._core.encode_command((b"EVALSHA", s.sha, b"1", queue_anchor(queue), *argv))
        reply = self._transport.run_many([(s, data)], [self._wake_command(queue)])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    @staticmethod
    def _now(now_ms_override: int) -> int:
        check_int("now_ms_override", now_ms_override, 0)
        return now_ms_override or now_ms()

    @staticmethod
    def _status(op: str, reply: object) -> list[Any]:
        """The reply as a list whose first item is ``"OK"``; error replies raise."""
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "OK":
                return reply
            if head == "ERR" and len(reply) >= 2:
                raise lease_error(op, text(reply[1]))
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")
