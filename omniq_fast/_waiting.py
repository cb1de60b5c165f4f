"""The blocking consumer's dispatcher wait: one thread woken by everything it waits for.

The dispatcher sleeps in ``select`` on a socket pair that completions, wake-ups and
:meth:`~omniq_fast.consumer.Consumer.stop` write a byte to (a :class:`threading.Event`
that a file descriptor stands for) and, when the wait may be long, on the wake listener's
own connection as well: the listener lends it for the wait, so a wake message or an
invalidation is read, and the reserve sent, on this one thread. A job published to an idle
consumer costs no thread hand-off before its reserve goes out.
"""

from __future__ import annotations

import select
import socket
from typing import Optional, Protocol

__all__ = ["Ear", "Wakeup", "LEND_MIN_S"]

#: Shorter waits (an ack delay, a backoff between completions) do not borrow the listener's
#: connection: the hand-over costs the listener thread a turn, about what a hop would cost.
LEND_MIN_S = 0.005


class Ear(Protocol):
    """What the dispatcher listens through while it waits (the wake listener)."""

    def listen(self, wakeup: socket.socket, timeout: float) -> bool:
        """Wait up to ``timeout`` for a message on the listener's connection or for
        ``wakeup`` to be readable, handling any message read; False (at once) when the
        connection cannot be lent now."""
        ...


class Wakeup:
    """A flag like :class:`threading.Event`, set from any thread or a signal handler,
    that a socket's readability also stands for, so one ``select`` waits for it and for
    other sockets together.

    The flag is the truth, the byte only a doorbell: a byte left over from a set that a
    :meth:`clear` raced with makes one wait return early, never a set go unnoticed. The
    socket pair is made by the first wait and released by :meth:`close` (a later wait
    makes another).
    """

    def __init__(self) -> None:
        self._pair: Optional[tuple[socket.socket, socket.socket]] = None
        self._flag = False

    def set(self) -> None:
        """Wake the waiter (now, or its next wait)."""
        if not self._flag:
            self._flag = True
            pair = self._pair  # read after the flag is up: see wait()
            if pair is not None:
                try:
                    pair[1].send(b"\0")
                except OSError:
                    pass  # bytes already waiting (the bell rings) or closed (nobody waits)

    def is_set(self) -> bool:
        """Whether :meth:`set` was called since the last :meth:`clear`."""
        return self._flag

    def clear(self) -> None:
        """Forget earlier sets (the waiter is about to look at everything)."""
        self._flag = False
        if self._pair is not None:
            try:
                while self._pair[0].recv(4096):
                    pass
            except OSError:
                pass  # nothing (more) to read

    def wait(self, timeout: float, ear: Optional[Ear] = None) -> None:
        """Return once set, or after ``timeout``; with an ``ear``, listen through it
        meanwhile if the wait may be long."""
        if self._pair is None:
            pair = socket.socketpair()
            for end in pair:
                end.setblocking(False)
            self._pair = pair
        # Checked after the pair exists: a set() that did not see the pair set the flag.
        if self._flag:
            return
        bell = self._pair[0]
        if ear is not None and timeout >= LEND_MIN_S and ear.listen(bell, timeout):
            return
        select.select((bell,), (), (), max(0.0, timeout))

    def close(self) -> None:
        """Release the socket pair (the flag is kept)."""
        pair, self._pair = self._pair, None
        if pair is not None:
            for end in pair:
                end.close()
