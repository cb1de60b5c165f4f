"""A worker module for the CLI: run it from this directory with

    omniq-fast worker tasks:send_email -q emails --concurrency 4

(``MODULE:FUNCTION``; the current directory is importable, as with ``python -m``).
``tasks:settings`` names the settings object below instead: its queues and options.
"""

from omniq_fast import JobCtx


def send_email(ctx: JobCtx) -> None:
    """Pretend to send ``ctx.payload``; a bounce raises, so the job is retried, then failed."""
    if ctx.payload["to"].endswith("@bounce.example"):
        raise ValueError(f"mailbox unavailable: {ctx.payload['to']}")


class settings:
    """``omniq-fast worker tasks:settings``: the queues and options live in code."""

    queues = ["emails"]
    concurrency = 4
    handler = staticmethod(send_email)

    @staticmethod
    def on_startup(client: object) -> None:
        print("worker starting", flush=True)  # open a database pool here

    @staticmethod
    def on_shutdown(client: object) -> None:
        print("worker stopping", flush=True)  # ... and close it here
