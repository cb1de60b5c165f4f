"""Stop controls shared by every consumer: SIGTERM, Ctrl+C, ``drain``, verbose lines.

:class:`StopOnSignals` is mixed into :class:`~omniq_fast.Consumer`,
:class:`~omniq_fast.MultiConsumer` and their asyncio twins; the signal handlers are
installed by the blocking side (the asyncio side installs the same handlers on its loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterator, Optional, Union

from ._context import JobCtx

__all__ = ["StopOnSignals", "LineLogger", "signals_to_main_thread"]

LineLogger = Union[Callable[[str], Any], logging.Logger]


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Threads started inside this block never receive SIGINT or SIGTERM (they inherit
    the blocked mask), so the kernel delivers those signals to the main thread.

    Python runs signal handlers in the main thread, but the kernel may deliver a signal
    sent to the process to any thread that does not block it; a main thread asleep in a
    handler (``time.sleep``, a socket read) is then not woken, and a Ctrl+C that should
    exit at once waits for the handler to return (seen once in a CI run: 30 s).
    """
    block = getattr(signal, "pthread_sigmask", None)
    if block is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = block(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, old)


class StopOnSignals:
    """Stop controls shared by :class:`Consumer` and the multi-queue consumer: SIGTERM
    stops gracefully; the first Ctrl+C drains (with ``drain``), the next one (or the
    first, without ``drain``) exits at once; ``verbose`` lines go to ``logger``."""

    queue: Any

    def _init_controls(
        self, verbose: bool, logger: LineLogger, drain: bool, stop_on_ctrl_c: bool
    ) -> None:
        self.verbose = verbose
        self.drain = drain
        self.stop_on_ctrl_c = stop_on_ctrl_c
        if isinstance(logger, logging.Logger):
            # Structured fields ride along as record attributes (for a JSON formatter).
            self._say: Callable[[str, dict[str, Any]], Any] = (
                lambda text, fields: logger.info(text, extra=fields)
            )
        else:
            self._say = lambda text, fields: logger(text)
        self._sigint_count = 0
        self._hard_exit = False  # our SIGINT handler raised KeyboardInterrupt to leave now

    def stop(self) -> None:
        raise NotImplementedError

    def _line(self, text: str, ctx: Optional[JobCtx] = None, **fields: Any) -> None:
        """A verbose line; with a ``logging.Logger`` its fields (``queue``, and for a job
        ``job_id``, ``attempt`` and what the caller adds) go in the record's ``extra``."""
        if self.verbose:
            fields["queue"] = self.queue
            if ctx is not None:
                fields["job_id"], fields["attempt"] = ctx.job_id, ctx.attempt
            self._say(f"[consume] {text}", fields)

    def _on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        self._line(f"SIGTERM received; stopping... queue={self.queue}")
        self.stop()

    def _on_sigint(self, signum: int, frame: Optional[FrameType]) -> None:
        self._sigint_count += 1
        if self.drain and self._sigint_count == 1:
            self._line("Ctrl+C received; draining current job then exiting.")
            self.stop()
            return
        self._line("SIGINT x2; hard exit now." if self.drain else "KeyboardInterrupt; exiting now.")
        self.stop()
        self._hard_exit = True
        raise KeyboardInterrupt

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be set from the main thread
        old_term = signal.signal(signal.SIGTERM, self._on_sigterm)
        old_int = signal.signal(signal.SIGINT, self._on_sigint) if self.stop_on_ctrl_c else None

        def restore() -> None:
            # None means the old handler was not set from Python; it cannot be put back.
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)

        return restore

    def _install_loop_signals(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """The asyncio side's signals, on ``loop``: the same handlers, and a hard exit
        cancels the task that installed them (it then leaves at once)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be set from the main thread
        task = asyncio.current_task()
        wanted = [signal.SIGTERM] + ([signal.SIGINT] if self.stop_on_ctrl_c else [])

        def on_signal(signum: int) -> None:
            try:
                if signum == signal.SIGTERM:
                    self._on_sigterm(signum, None)
                else:
                    self._on_sigint(signum, None)
            except KeyboardInterrupt:
                if task is not None:
                    task.cancel()  # the hard exit: run() leaves at once

        installed = []
        for signum in wanted:
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not on this loop / platform
                pass

        def restore() -> None:
            for signum in installed:
                loop.remove_signal_handler(signum)

        return restore
