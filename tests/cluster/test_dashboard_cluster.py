"""The dashboard on a Redis Cluster: pages read the master of the queue's slot (the
groups listing SCANs that node only) and actions route there."""

from __future__ import annotations

from typing import Any

import pytest

from omniq_fast import Client, Job

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
testclient = pytest.importorskip("starlette.testclient")


def test_dashboard_on_cluster(redis_url: str, qname: str, r: Any) -> None:
    from omniq_fast.dashboard import create_app

    with Client(redis_url) as client:
        client.publish_many(qname, [Job({"i": i}, gid=f"g{i % 30}", group_limit=1)
                                    for i in range(90)])
        client.publish(qname, {"plain": 1})
        with testclient.TestClient(create_app(client)) as web:
            rows = {q["queue"]: q for q in web.get("/api/queues").json()["queues"]}
            assert rows[qname]["group_waiting"] == 90 and rows[qname]["waiting"] == 1
            gids: set[str] = set()
            url = f"/queues/{qname}/groups?limit=20"
            for _ in range(10):
                page = web.get(url).text
                gids |= {g.split('"')[0] for g in page.split('data-gid="')[1:]}
                if 'rel="next"' not in page:
                    break
                url = page.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
            assert gids == {f"g{i}" for i in range(30)}
            page = web.get(f"/queues/{qname}").text
            token = page.split('name="csrf" value="')[1].split('"')[0]
            web.post(f"/queues/{qname}/pause", data={"csrf": token})
            assert r.get("{" + qname + "}:paused") == b"1"
