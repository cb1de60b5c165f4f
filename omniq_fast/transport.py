"""Sends encoded commands over a redis-py connection and reads the raw replies.

redis-py sets the connection up (URL, AUTH/ACL, db, TLS, timeouts); we write bytes our core
encoded and read replies undecoded. Retries are ours, not redis-py's: a script whose reply
was lost may already have run, so only reads are retried after a connection error.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Sequence

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConnectionLost
from .scripts import Script

__all__ = ["Transport"]

_NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class Transport:
    """Runs commands and scripts on one redis-py client's connection pool."""

    def __init__(self, client: redis.Redis, core: ModuleType) -> None:
        self.redis = client
        self._pool = client.connection_pool
        self._core = core

    def _roundtrip(self, packed: bytes, count: int, what: str) -> list[Any]:
        """Write ``count`` encoded commands at once and read their replies.

        Error replies come back as ``ResponseError`` values, not raised, so one bad reply
        does not hide the others. A network error once sending has begun raises
        :class:`ConnectionLost`; one while connecting (refused, bad password) propagates
        as redis-py raised it, since nothing reached the server.
        """
        conn = self._pool.get_connection()
        try:
            conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response(disable_decoding=True))
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except _NETWORK_ERRORS as exc:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise ConnectionLost(
                f"connection lost during {what}; its effect on the server is unknown: {exc}"
            ) from exc
        except BaseException:
            # The connection's state is unknown (half-read replies): never reuse it.
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            self._pool.release(conn)

    def command(self, *args: bytes | str | int) -> Any:
        """Run one idempotent command (a read), reconnecting once on a network error."""
        packed = self._core.encode_command(args)
        what = str(args[0])
        try:
            reply = self._roundtrip(packed, 1, what)[0]
        except (ConnectionLost, *_NETWORK_ERRORS):
            reply = self._roundtrip(packed, 1, what)[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def run_script(self, script: Script, anchor: str, argv: Sequence[bytes | str | int]) -> Any:
        """EVALSHA ``script`` with one key; load it and retry once on NOSCRIPT.

        A network error after sending raises :class:`ConnectionLost` and is not retried:
        the script may or may not have run, and re-sending it could queue or process a
        job twice.
        """
        packed = self._core.encode_command((b"EVALSHA", script.sha, b"1", anchor, *argv))
        reply = self._roundtrip(packed, 1, script.name)[0]
        if isinstance(reply, NoScriptError):
            # Loading and re-running is safe: a NOSCRIPT reply means nothing ran.
            load = self._core.encode_command((b"SCRIPT", b"LOAD", script.source))
            loaded, reply = self._roundtrip(load + packed, 2, script.name)
            if isinstance(loaded, ResponseError):
                raise loaded
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        self.redis.close()
