"""The dashboard's Starlette app: pages, JSON for the live updates, and the actions."""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union, cast
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..client import Client
from ..errors import AdminError, InvalidKey, InvalidQueueName
from ..keys import validate_queue_name
from ..monitor import GroupStatus, JobInfo, Lane
from ._data import RETRY_ALL_MAX, DashboardData
from ._sampler import Sampler
from ._security import CSRF_FIELD, Guard

__all__ = ["create_app"]

_HERE = Path(__file__).resolve().parent
#: Jobs per page (the monitor's own maximum).
PAGE_SIZE = 25
GROUPS_PAGE_SIZE = 50
#: Payloads longer than this are cut on the job page (the page must stay usable).
PAYLOAD_SHOWN_MAX = 256 * 1024
TABS = ("wait", "delayed", "active", "failed", "completed", "gwait")
TAB_TITLES = {"wait": "Waiting", "delayed": "Delayed", "active": "Active", "failed": "Failed",
              "completed": "Completed", "gwait": "Group wait"}
#: Failed and completed jobs are most interesting newest first; the others in run order.
NEWEST_FIRST = frozenset(("failed", "completed"))
GROUP_SORTS = ("gid", "waiting", "active", "status")

Endpoint = Callable[[Request], Awaitable[Response]]


def _ms_text(ms: int) -> str:
    if not ms:
        return "—"
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}Z"


def _age_text(ms: int, now_ms: Optional[int] = None) -> str:
    if not ms:
        return "—"
    seconds = max(0, ((now_ms or int(time.time() * 1000)) - ms) // 1000)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _group_state(group: GroupStatus) -> str:
    """``blocked``: at its limit; ``ready``: in groups:ready; else ``idle``."""
    if group.inflight >= group.limit:
        return "blocked"
    return "ready" if group.ready else "idle"


def _pretty_payload(payload: str) -> str:
    shown = payload[:PAYLOAD_SHOWN_MAX]
    try:
        text = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        shown = text[:PAYLOAD_SHOWN_MAX]
    except ValueError:
        pass
    if len(shown) < len(payload) and len(payload) > PAYLOAD_SHOWN_MAX:
        shown += f"\n… cut at {PAYLOAD_SHOWN_MAX} characters"
    return shown


def _remove_lane(job: JobInfo) -> Optional[str]:
    """The lane ``remove_job`` needs for ``job``, or None when it cannot be removed."""
    if job.state == "wait":
        return "gwait" if job.gid else "wait"
    return job.state if job.state in ("delayed", "failed", "completed") else None


def _local_path(path: str) -> bool:
    """Whether ``path`` is a path on this site (not ``//host`` or ``/\\host``, which
    browsers follow to another site)."""
    return path.startswith("/") and not path.startswith(("//", "/\\")) and "\\" not in path


def _int_param(request: Request, name: str, default: int, low: int = 0) -> int:
    try:
        return max(low, int(request.query_params.get(name, default)))
    except ValueError:
        return default


class _Dashboard:
    """Handlers of one app; state shared by them lives here."""

    def __init__(
        self, data: DashboardData, guard: Guard, read_only: bool, sample_interval_s: float
    ) -> None:
        self.data = data
        self.guard = guard
        self.read_only = read_only
        self.sampler = Sampler(data, sample_interval_s)
        self.templates = Jinja2Templates(directory=str(_HERE / "templates"))
        env = self.templates.env
        env.filters["q"] = lambda value: quote(str(value), safe="")
        env.filters["ms"] = _ms_text
        env.filters["age"] = _age_text
        env.globals["tab_titles"] = TAB_TITLES

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def cookie_path(self, request: Request) -> str:
        return self.base(request) + "/"

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        self.sampler.ensure_started()
        context.update(
            request=request, base=self.base(request), read_only=self.read_only,
            csrf_field=CSRF_FIELD, csrf=self.guard.csrf_token(request),
            auth_required=self.guard.required, msg=request.query_params.get("msg", ""),
            now_ms=int(time.time() * 1000), interval=self.sampler.interval_s,
        )
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        self.guard.keep_csrf(request, response, self.cookie_path(request),
                             request.url.scheme == "https")
        return response

    def back(self, request: Request, path: str, msg: str = "") -> Response:
        if not _local_path(path):  # a form's "next" must stay inside the dashboard
            path = "/"
        url = self.base(request) + path
        if msg:
            url += ("&" if "?" in url else "?") + urlencode({"msg": msg})
        return RedirectResponse(url, status_code=303)

    def page(self, handler: Endpoint) -> Endpoint:
        """A GET page or JSON endpoint behind the token."""

        async def guarded(request: Request) -> Response:
            if not self.guard.authenticated(request):
                if request.url.path.startswith(self.base(request) + "/api/"):
                    return JSONResponse({"error": "authentication required"}, status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self.back(request, "/login?" + urlencode({"next": target}))
            try:
                return await handler(request)
            except (InvalidQueueName, InvalidKey) as exc:
                return self.render(request, "error.html", 404, error=str(exc))

        return guarded

    def action(self, handler: Callable[[Request, Any], Awaitable[Response]]) -> Endpoint:
        """A POST behind the token, the CSRF check and read-only mode."""

        async def guarded(request: Request) -> Response:
            if not self.guard.authenticated(request):
                return PlainTextResponse("authentication required", status_code=401)
            if self.read_only:
                return PlainTextResponse("this dashboard is read-only", status_code=403)
            form = await request.form()
            if not self.guard.post_ok(request, str(form.get(CSRF_FIELD, ""))):
                return PlainTextResponse("CSRF check failed: reload the page and try again",
                                         status_code=403)
            try:
                return await handler(request, form)
            except (InvalidQueueName, InvalidKey) as exc:
                return PlainTextResponse(str(exc), status_code=404)

        return guarded

    @staticmethod
    def queue_of(request: Request) -> str:
        return validate_queue_name(request.path_params["queue"])

    # ------------------------------------------------------------------ pages

    async def queues_json(self, *, fresh: bool = False) -> dict[str, Any]:
        names = await self.sampler.queue_names(fresh=fresh)
        samples = await self.data.activity(names, {})
        now = time.time()
        rows = []
        for sample in samples:
            per_min, fail_rate = self.sampler.history.rates(sample.stats.queue, now)
            stats = sample.stats
            rows.append({
                "queue": stats.queue, "paused": stats.paused, "waiting": stats.waiting,
                "group_waiting": stats.group_waiting, "waiting_total": stats.waiting_total,
                "delayed": stats.delayed, "active": stats.active, "failed": stats.failed,
                "completed_kept": stats.completed_kept, "groups_ready": stats.groups_ready,
                "oldest_wait_ms": sample.oldest_wait_ms,
                "oldest_wait_age": _age_text(sample.oldest_wait_ms),
                "completed_per_min": round(per_min, 1),
                "failure_rate": round(100 * fail_rate, 1),
            })
        return {"now_ms": int(now * 1000), "queues": rows,
                "series": self.sampler.history.series(None, now)}

    async def queues_page(self, request: Request) -> Response:
        # A page load scans for queues; the live updates reuse the last scan for a while.
        return self.render(request, "queues.html", overview=await self.queues_json(fresh=True))

    async def queues_api(self, request: Request) -> Response:
        self.sampler.ensure_started()
        return JSONResponse(await self.queues_json())

    async def queue_json(self, queue: str) -> dict[str, Any]:
        stats = await self.data.stats(queue)
        sizes = await self.data.lane_sizes(queue)
        now = time.time()
        per_min, fail_rate = self.sampler.history.rates(queue, now)
        return {
            "queue": queue, "paused": stats.paused, "waiting": stats.waiting,
            "group_waiting": stats.group_waiting, "delayed": stats.delayed,
            "active": stats.active, "failed": stats.failed,
            "completed_kept": stats.completed_kept, "groups_ready": stats.groups_ready,
            "lanes": sizes, "completed_per_min": round(per_min, 1),
            "failure_rate": round(100 * fail_rate, 1),
            "series": self.sampler.history.series(queue, now),
        }

    async def queue_api(self, request: Request) -> Response:
        self.sampler.ensure_started()
        return JSONResponse(await self.queue_json(self.queue_of(request)))

    async def queue_page(self, request: Request) -> Response:
        queue = self.queue_of(request)
        tab = request.query_params.get("lane", "wait")
        if tab not in TABS:
            tab = "wait"
        page = _int_param(request, "page", 1, 1)
        info = await self.queue_json(queue)
        total = info["lanes"][tab]
        jobs: list[Any] = []
        groups: list[Any] = []
        if tab == "gwait":
            ready = await self.data.ready_groups(queue, (page - 1) * PAGE_SIZE, PAGE_SIZE)
            statuses = await self.data.group_status(queue, [g.gid for g in ready])
            groups = [(g, s, _group_state(s)) for g, s in zip(ready, statuses)]
        else:
            jobs = await self.data.lane_page(queue, cast(Lane, tab), (page - 1) * PAGE_SIZE,
                                             PAGE_SIZE, tab in NEWEST_FIRST)
        pages = max(1, -(-total // PAGE_SIZE))
        return self.render(request, "queue.html", queue=queue, info=info, tab=tab, tabs=TABS,
                           jobs=jobs, groups=groups, page=page, pages=pages, total=total)

    async def job_page(self, request: Request) -> Response:
        queue = self.queue_of(request)
        job_id = request.query_params.get("id", "").strip()
        job = await self.data.job(queue, job_id) if job_id else None
        if job is None:
            return self.render(request, "error.html", 404, queue=queue,
                               error=f"no job {job_id!r} in queue {queue}")
        group = (await self.data.group_status(queue, [job.gid]))[0] if job.gid else None
        return self.render(
            request, "job.html", queue=queue, job=job, payload=_pretty_payload(job.payload),
            group=group, group_state=_group_state(group) if group else "",
            remove_lane=_remove_lane(job),
        )

    async def groups_page(self, request: Request) -> Response:
        queue = self.queue_of(request)
        cursor = request.query_params.get("cursor", "")
        sort = request.query_params.get("sort", "gid")
        if sort not in GROUP_SORTS:
            sort = "gid"
        descending = request.query_params.get("dir") == "desc"
        limit = min(_int_param(request, "limit", GROUPS_PAGE_SIZE, 1), 200)
        listing = await self.data.groups_page(queue, cursor, limit)
        rows = [(g, _group_state(g)) for g in listing.groups]
        keys: dict[str, Callable[[tuple[GroupStatus, str]], Any]] = {
            "gid": lambda row: row[0].gid,
            "waiting": lambda row: (row[0].waiting_count, row[0].gid),
            "active": lambda row: (row[0].inflight / row[0].limit, row[0].inflight, row[0].gid),
            "status": lambda row: (row[1], row[0].gid),
        }
        rows.sort(key=keys[sort], reverse=descending)
        stats = await self.data.stats(queue)
        return self.render(request, "groups.html", queue=queue, rows=rows, cursor=cursor,
                           next_cursor=listing.cursor, sort=sort, descending=descending,
                           limit=limit, stats=stats)

    async def group_page(self, request: Request) -> Response:
        queue = self.queue_of(request)
        gid = request.query_params.get("gid", "").strip()
        if not gid:
            return self.back(request, f"/queues/{queue}/groups")
        page = _int_param(request, "page", 1, 1)
        status = (await self.data.group_status(queue, [gid]))[0]
        jobs = await self.data.group_wait_page(queue, gid, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        pages = max(1, -(-status.waiting_count // PAGE_SIZE))
        return self.render(request, "group.html", queue=queue, group=status,
                           state=_group_state(status), jobs=jobs, page=page, pages=pages)

    async def counters_page(self, request: Request) -> Response:
        key = request.query_params.get("key", "").strip()
        counter = await self.data.counter(key) if key else None
        return self.render(request, "counters.html", key=key, counter=counter)

    # ------------------------------------------------------------------ actions

    async def pause(self, request: Request, form: Any) -> Response:
        queue = self.queue_of(request)
        await self.data.pause(queue)
        return self.back(request, str(form.get("next") or f"/queues/{queue}"), f"{queue} paused")

    async def resume(self, request: Request, form: Any) -> Response:
        queue = self.queue_of(request)
        await self.data.resume(queue)
        return self.back(request, str(form.get("next") or f"/queues/{queue}"), f"{queue} resumed")

    async def retry(self, request: Request, form: Any) -> Response:
        queue = self.queue_of(request)
        job_id = str(form.get("id", ""))
        try:
            await self.data.retry(queue, job_id)
        except AdminError as exc:
            return self.back(request, f"/queues/{queue}?lane=failed",
                             f"retry of {job_id} refused: {exc.reason}")
        return self.back(request, str(form.get("next") or f"/queues/{queue}?lane=failed"),
                         f"job {job_id} queued again")

    async def remove(self, request: Request, form: Any) -> Response:
        queue = self.queue_of(request)
        job_id, lane = str(form.get("id", "")), str(form.get("lane", ""))
        try:
            await self.data.remove(queue, job_id, lane)
        except AdminError as exc:
            return self.back(request, f"/queues/{queue}", f"removal of {job_id} refused: "
                                                          f"{exc.reason}")
        except ValueError as exc:  # InvalidArgument: a lane remove_job does not know
            return self.back(request, f"/queues/{queue}", f"removal refused: {exc}")
        return self.back(request, f"/queues/{queue}?lane={'wait' if lane == 'gwait' else lane}",
                         f"job {job_id} removed")

    async def retry_all_confirm(self, request: Request) -> Response:
        queue = self.queue_of(request)
        if self.read_only:
            return PlainTextResponse("this dashboard is read-only", status_code=403)
        sizes = await self.data.lane_sizes(queue)
        return self.render(request, "confirm.html", queue=queue, failed=sizes["failed"],
                           batch_max=RETRY_ALL_MAX)

    async def retry_all(self, request: Request, form: Any) -> Response:
        queue = self.queue_of(request)
        if form.get("confirm") != "yes":  # the confirm step was skipped
            return self.back(request, f"/queues/{queue}/retry-failed")
        retried, left = await self.data.retry_all_failed(queue)
        note = f"{retried} failed jobs queued again" + (f", {left} still failed" if left else "")
        return self.back(request, f"/queues/{queue}?lane=failed", note)

    # ------------------------------------------------------------------ login

    async def login_page(self, request: Request) -> Response:
        if not self.guard.required:
            return self.back(request, "/")
        return self.render(request, "login.html", next=request.query_params.get("next", ""),
                           error="")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not self.guard.post_ok(request, str(form.get(CSRF_FIELD, ""))):
            return PlainTextResponse("CSRF check failed: reload the page and try again",
                                     status_code=403)
        target = str(form.get("next", ""))
        if not target.startswith(self.base(request) + "/") or not _local_path(target):
            target = self.base(request) + "/"
        if not self.guard.token_matches(str(form.get("token", ""))):
            return self.render(request, "login.html", 401, next=target, error="wrong token")
        response = RedirectResponse(target, status_code=303)
        self.guard.log_in(response, self.cookie_path(request), request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not self.guard.post_ok(request, str(form.get(CSRF_FIELD, ""))):
            return PlainTextResponse("CSRF check failed", status_code=403)
        response = self.back(request, "/login")
        self.guard.log_out(response, self.cookie_path(request))
        return response

    def routes(self) -> list[BaseRoute]:
        page, action = self.page, self.action
        return [
            Route("/", page(self.queues_page), name="queues"),
            Route("/api/queues", page(self.queues_api)),
            Route("/api/queues/{queue}", page(self.queue_api)),
            Route("/queues/{queue}", page(self.queue_page)),
            Route("/queues/{queue}/job", page(self.job_page)),
            Route("/queues/{queue}/groups", page(self.groups_page)),
            Route("/queues/{queue}/group", page(self.group_page)),
            Route("/counters", page(self.counters_page)),
            Route("/queues/{queue}/pause", action(self.pause), methods=["POST"]),
            Route("/queues/{queue}/resume", action(self.resume), methods=["POST"]),
            Route("/queues/{queue}/retry", action(self.retry), methods=["POST"]),
            Route("/queues/{queue}/remove", action(self.remove), methods=["POST"]),
            Route("/queues/{queue}/retry-failed", page(self.retry_all_confirm)),
            Route("/queues/{queue}/retry-failed", action(self.retry_all), methods=["POST"]),
            Route("/login", self.login_page),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
        ]


def create_app(
    url_or_client: Union[str, Client],
    *,
    token: Optional[str] = None,
    read_only: bool = False,
    prefix: str = "",
    sample_interval_s: float = 5.0,
) -> Starlette:
    """The dashboard as a Starlette app.

    ``url_or_client`` is a Redis URL (the app opens and closes its own client) or an
    omniq-fast :class:`~omniq_fast.Client` (left open). With ``token``, every page needs
    ``Authorization: Bearer <token>`` or a login; without, the dashboard has no
    authentication of its own: mount it behind the hosting app's. ``read_only`` hides and
    refuses (403) every action. ``prefix`` serves the pages under that path (``/omniq``);
    mounting the app with ``Mount("/omniq", app)`` works too. ``sample_interval_s`` is how
    often the completed/failed history samples the queues.
    """
    if isinstance(url_or_client, Client):
        data = DashboardData(url_or_client, owns_client=False)
    else:
        data = DashboardData(Client(url_or_client), owns_client=True)
    if sample_interval_s <= 0:
        raise ValueError("sample_interval_s must be > 0")
    dashboard = _Dashboard(data, Guard(token), read_only, sample_interval_s)
    routes = dashboard.routes()
    prefix = prefix.rstrip("/")
    if prefix:
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', got {prefix!r}")
        routes = [Mount(prefix, routes=routes)]

        async def to_prefix(request: Request) -> Response:
            return RedirectResponse(str(request.scope.get("root_path", "")) + prefix + "/")

        routes.append(Route("/", to_prefix))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Runs only when this app is served on its own (mounted, the first request starts
        # the sampler and its task ends with the host's event loop).
        dashboard.sampler.ensure_started()
        yield
        await dashboard.sampler.stop()
        await data.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = dashboard
    return app
