"""The dashboard in a real headless Chromium (selenium + Debian's chromium-driver), served
by uvicorn on a loopback port, against a real server. Each test saves a screenshot under
``tmp/artifacts`` (``OMNIQ_FAST_ARTIFACTS`` overrides)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from omniq_fast import Client, Job
from helpers import failed_job
from support import wait_until

webdriver = pytest.importorskip("selenium.webdriver")
uvicorn = pytest.importorskip("uvicorn")
from selenium.webdriver.common.by import By  # noqa: E402

ARTIFACTS = Path(os.environ.get("OMNIQ_FAST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "tmp" / "artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
    profile = tempfile.mkdtemp(prefix="omniq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1360,860"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                              options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


class Site(str):
    """The dashboard's base URL, with the app being served as ``.app``."""

    app: Any


@pytest.fixture
def site(client: Client) -> Iterator[Site]:
    """The dashboard served by uvicorn in a thread."""
    from omniq_fast.dashboard import create_app

    port = _free_port()
    app = create_app(client, sample_interval_s=0.5)
    server = uvicorn.Server(uvicorn.Config(app,
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn started")
    url = Site(f"http://127.0.0.1:{port}")
    url.app = app
    yield url
    server.should_exit = True
    thread.join(10)


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def cell(driver: Any, queue: str, key: str) -> str:
    return str(driver.find_element(
        By.CSS_SELECTOR, f'tr[data-queue="{queue}"] td[data-k="{key}"]').text)


def test_queue_list_shows_counts(browser: Any, site: str, client: Client, qname: str) -> None:
    failed_job(client, qname)  # first: it reserves the queue's only job
    client.publish_many(qname, [{"i": i} for i in range(7)])
    client.publish_many(qname, [Job({"g": i}, gid="acme", group_limit=2) for i in range(3)])
    client.publish(qname, {"later": 1}, due_ms=int(time.time() * 1000) + 600_000)
    browser.get(site + "/")
    assert cell(browser, qname, "waiting") == "7"
    assert cell(browser, qname, "group_waiting") == "3"
    assert cell(browser, qname, "delayed") == "1"
    assert cell(browser, qname, "failed") == "1"
    assert cell(browser, qname, "paused") == "running"
    shot(browser, "queues")


def test_groups_page_shows_blocked_group(browser: Any, site: str, client: Client,
                                         qname: str) -> None:
    client.publish_many(qname, [Job({"i": i}, gid="customer-42", group_limit=2) for i in range(6)])
    for _ in range(2):  # no ungrouped jobs: both reservations come from customer-42
        client.reserve(qname)
    client.publish_many(qname, [Job({"i": i}, gid="customer-7", group_limit=3) for i in range(2)])
    browser.get(f"{site}/queues/{qname}/groups")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-gid="customer-42"]')
    assert "blocked" in row.text and "2 / 2" in row.text
    other = browser.find_element(By.CSS_SELECTOR, 'tr[data-gid="customer-7"]')
    assert "ready" in other.text and "0 / 3" in other.text
    shot(browser, "groups")


def test_retry_button_moves_failed_job_back(browser: Any, site: str, client: Client,
                                            qname: str, r: redis.Redis) -> None:
    job_id = failed_job(client, qname, {"invoice": 1001}, error="TimeoutError: upstream slow")
    browser.get(f"{site}/queues/{qname}?lane=failed")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    assert "upstream slow" in row.text
    shot(browser, "failed-lane")
    row.find_element(By.XPATH, './/button[text()="Retry"]').click()
    wait_until(lambda: r.hget("{" + qname + "}:job:" + job_id, "state") == b"wait",
               "retried job back in wait")
    assert r.lrange("{" + qname + "}:wait", 0, -1) == [job_id.encode()]
    assert r.llen("{" + qname + "}:failed") == 0
    assert "queued again" in browser.find_element(By.ID, "flash").text
    shot(browser, "retried")


def test_pause_button_pauses_queue(browser: Any, site: str, client: Client, qname: str,
                                   r: redis.Redis) -> None:
    client.publish(qname, {"a": 1})
    browser.get(f"{site}/queues/{qname}")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
    wait_until(lambda: r.get("{" + qname + "}:paused") == b"1", "queue paused")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, 'button[data-action="resume"]'),
               "resume button shown")
    assert "paused" in browser.find_element(By.ID, "state").text
    shot(browser, "paused")


def test_counts_update_live(browser: Any, site: Site, client: Client, qname: str) -> None:
    client.publish_many(qname, [{"i": i} for i in range(2)])
    browser.get(site + "/")
    assert cell(browser, qname, "waiting") == "2"
    assert not browser.find_elements(By.CSS_SELECTOR, "#chart rect")
    history = site.app.state.dashboard.sampler.history
    wait_until(lambda: qname in history.marks(), "the sampler knows the queue")
    marker = browser.execute_script("window.__noReload = 1; return window.__noReload;")
    client.publish_many(qname, [{"i": i} for i in range(5)])
    for _ in range(3):
        job = client.reserve(qname)
        client.ack_success(qname, job.job_id, job.lease_token)  # type: ignore[union-attr]
    wait_until(lambda: cell(browser, qname, "waiting") == "4", "live count 4", timeout=15)
    assert cell(browser, qname, "completed_kept") == "3"
    # The sampler counted the completions and the page drew them as SVG bars.
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart rect"), "chart bars",
               timeout=15)
    assert browser.execute_script("return window.__noReload;") == marker  # same page
    shot(browser, "live")
