"""A handler's ctx is typed for its shell: mypy (strict) accepts ``await ctx.exec.publish``
in an ``async def`` handler of an AsyncConsumer (``AsyncJobCtx``) and a plain call in a
blocking one (``JobCtx``), and catches a misuse of either (so the check can fail)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_SNIPPET = textwrap.dedent(
    """
    from omniq_fast import AsyncClient, AsyncConsumer, Client, Consumer, JobCtx
    from omniq_fast.aio import AsyncJobCtx


    async def handler(ctx: AsyncJobCtx) -> None:
        job_id: str = await ctx.exec.publish(queue="child", payload={"y": 2})
        await ctx.check_completion.init_job_counter("cc", 1)
        left: int = await ctx.check_completion.job_decrement("cc")


    def sync_handler(ctx: JobCtx) -> None:
        job_id: str = ctx.exec.publish(queue="child", payload={"y": 2})
        left: int = ctx.check_completion.job_decrement("cc")


    async def main(client: AsyncClient, blocking: Client) -> None:
        await AsyncConsumer(client, "q", handler).run()
        await client.consume("q", handler)
        Consumer(blocking, "q", sync_handler).run()


    async def not_awaited(ctx: AsyncJobCtx) -> None:
        left: int = ctx.check_completion.job_decrement("cc")  # WRONG: a coroutine


    def awaited_in_sync(ctx: JobCtx) -> None:
        job_id: int = ctx.exec.publish(queue="child", payload={})  # WRONG: a str
    """
)


def test_each_shell_types_its_ctx(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    snippet = tmp_path / "handlers.py"
    snippet.write_text(_SNIPPET)
    # From the repository root (omniq_fast found there, the typecheck's cache reused).
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(snippet)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # The snippet's errors only: against an older redis-py's stubs (the floor leg of CI)
    # mypy also follows imports into the package and reports what those stubs lack there.
    errors = [line for line in done.stdout.splitlines()
              if ": error:" in line and f"{snippet.name}:" in line]  # fmt: skip
    wrong = [i + 1 for i, line in enumerate(_SNIPPET.splitlines()) if "# WRONG" in line]
    flagged = sorted({int(m.group(1)) for e in errors if (m := re.search(r":(\d+): error", e))})
    assert flagged == wrong, done.stdout + done.stderr
