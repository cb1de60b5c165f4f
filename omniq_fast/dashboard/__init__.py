"""A web dashboard for OmniQ queues and groups (needs the ``dashboard`` extra).

``create_app(url_or_client, token=None, read_only=False, prefix="")`` returns a Starlette
app to serve with uvicorn or mount inside FastAPI/Starlette; ``omniq-fast dashboard``
serves it (see :mod:`omniq_fast.dashboard.command`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingExtra

__all__ = ["create_app", "DashboardUnavailable"]


class DashboardUnavailable(MissingExtra):
    """The dashboard's libraries (starlette, uvicorn, jinja2) are not installed."""

    def __init__(self) -> None:
        super().__init__("dashboard pages", "dashboard")

if TYPE_CHECKING:
    from .app import create_app
else:

    def create_app(*args: Any, **kwargs: Any) -> Any:
        try:
            from .app import create_app as real
        except ImportError as exc:
            raise DashboardUnavailable() from exc
        return real(*args, **kwargs)
