"""A scripted RESP peer for the tests that need a server to misbehave on cue."""

from __future__ import annotations

import socket
import threading
from typing import Iterator, Optional

import hiredis
import pytest


class ScriptedServer:
    """Answers each EVALSHA with the next canned reply; ``None`` closes the connection.

    Commands are split with hiredis (requests are RESP arrays too), so a pipelined write of
    several commands is answered command by command, like a real server.
    """

    def __init__(self, answers: list[Optional[bytes]]) -> None:
        self.answers = list(answers)
        self.evalshas = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with conn:
            while data := conn.recv(1 << 16):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    name = command[0].upper()
                    if name == b"HELLO":
                        conn.sendall(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                    elif name == b"INFO":  # the client asks once whether this is a cluster
                        conn.sendall(b"$17\r\ncluster_enabled:0\r\n")
                    elif name != b"EVALSHA":
                        conn.sendall(b"+OK\r\n")
                    else:
                        self.evalshas += 1
                        answer = self.answers.pop(0) if self.answers else None
                        if answer is None:
                            return
                        conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[ScriptedServer]:
    """A :class:`ScriptedServer` answering with ``request.param`` (use ``indirect=True``)."""
    server = ScriptedServer(request.param)
    yield server
    server.close()
