"""``omniq-fast dashboard``: serve the dashboard with uvicorn (a plain click command that
the CLI group registers)."""

from __future__ import annotations

from typing import Optional

import click

from ..cli.options import redis_url_option

__all__ = ["dashboard"]


@click.command("dashboard")
@redis_url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, envvar="OMNIQ_DASHBOARD_TOKEN",
              help="Require this token (login form or 'Authorization: Bearer'); "
                   "also read from $OMNIQ_DASHBOARD_TOKEN.")
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option("--prefix", default="", help="Serve under this path, e.g. /omniq.")
def dashboard(
    redis_url: str, host: str, port: int, token: Optional[str], read_only: bool, prefix: str
) -> None:
    """Serve the web dashboard: queues, groups, jobs, live counts and actions."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        from . import DashboardUnavailable

        raise DashboardUnavailable() from exc
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("warning: no --token and listening beyond loopback: anyone who can reach "
                   f"{host}:{port} can pause queues and remove jobs", err=True)
    app = create_app(redis_url, token=token or None, read_only=read_only, prefix=prefix)
    click.echo(f"omniq-fast dashboard on http://{host}:{port}{prefix.rstrip('/')}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
