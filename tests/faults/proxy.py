"""A TCP proxy on loopback that injects real network faults between a client and a server.

Every connection a client opens to :attr:`FaultProxy.port` is forwarded to the target
server by one thread per connection. The test flips faults at any moment:

* :meth:`reset` — close every live connection with a TCP RST (``SO_LINGER`` 0): the client
  sees ``ECONNRESET`` mid-reply or on its next read.
* :meth:`stall` — stop forwarding in both directions (bytes stay queued in the kernel, the
  connection stays open): a frozen server, as far as the client can tell.
* :meth:`refuse` — accept new connections and reset them at once (the server is "down").
* :meth:`cut_replies_after` — forward only the next ``n`` bytes of replies, then reset: a
  reply cut in the middle.
* :meth:`corrupt_next_reply` — replace the first byte of the next reply chunk with a byte
  no RESP reply starts with: a reply the client cannot parse.

The proxy never invents replies: everything the client reads was sent by the real server,
cut, delayed or damaged on the way.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import Optional

__all__ = ["FaultProxy"]

_CHUNK = 65536


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; faults are switched by the methods."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stalled = threading.Event()
        self._refusing = False
        self._reply_budget: Optional[int] = None  # bytes of replies left before a reset
        self._corrupt = False
        self._closed = False
        self.connections = 0  # accepted so far (refused ones included)
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # ------------------------------------------------------------------ faults

    def reset(self) -> int:
        """Reset every live connection; returns how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            _rst(client)
            _rst(server)
        return len(pairs)

    def stall(self, on: bool = True) -> None:
        """Stop (or resume) forwarding bytes on every connection, new ones included."""
        if on:
            self._stalled.set()
        else:
            self._stalled.clear()

    def refuse(self, on: bool = True) -> None:
        """Reset new connections at once (and, when turning on, the live ones)."""
        self._refusing = on
        if on:
            self.reset()

    def cut_replies_after(self, n: int) -> None:
        """Forward only ``n`` more bytes of replies (over all connections), then reset the
        connection that carried the last of them (once)."""
        with self._lock:
            self._reply_budget = n

    def corrupt_next_reply(self) -> None:
        """Damage the first byte of the next chunk of replies."""
        with self._lock:
            self._corrupt = True

    def heal(self) -> None:
        """Clear every fault (live connections stay as they are)."""
        self._refusing = False
        self._stalled.clear()
        with self._lock:
            self._reply_budget = None
            self._corrupt = False

    def close(self) -> None:
        self._closed = True
        self.heal()
        try:
            self._listener.close()
        except OSError:
            pass
        self.reset()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ forwarding

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._refusing:
                _rst(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                _rst(client)
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(
                target=self._pump, args=(client, server), name="fault-proxy-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        try:
            while not self._closed:
                if self._stalled.is_set():
                    time.sleep(0.005)
                    continue
                try:
                    readable, _, _ = select.select([client, server], [], [], 0.05)
                except (OSError, ValueError):
                    return
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    cut = False
                    if sock is server:
                        data, cut = self._shape_reply(data)
                    if data:
                        peer[sock].sendall(data)
                    if cut:
                        return
        except OSError:
            return
        finally:
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))
            _rst(client)
            _rst(server)

    def _shape_reply(self, data: bytes) -> tuple[bytes, bool]:
        """Apply the reply faults to one chunk: what to forward, and whether to reset the
        connection right after it."""
        with self._lock:
            if self._corrupt:
                self._corrupt = False
                data = b"\x00" + data[1:]
            if self._reply_budget is not None:
                if len(data) >= self._reply_budget:
                    data = data[: self._reply_budget]
                    self._reply_budget = None  # one cut per call of cut_replies_after
                    return data, True
                self._reply_budget -= len(data)
        return data, False


def _rst(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
