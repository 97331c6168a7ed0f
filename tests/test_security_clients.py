"""The bundled clients against an API that asks for a token: `metrics-store watch`, the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import chromium, expect_panels, expect_state, require_chromium
from tests.processes import ApiProcess, CliProcess, child_env
from workers.redis_process import RedisServerProcess

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def guarded_api(redis_server: RedisServerProcess) -> Iterator[str]:
    """An API process with METRICS_API_TOKEN set; its base URL."""
    env = child_env(redis_server.url, "tsecurityclients", METRICS_API_TOKEN=TOKEN)
    with ApiProcess(env) as api:
        yield api.base_url


def run_watch(base_url: str, *args: str, token: str | None) -> CliProcess:
    """`metrics-store watch --count 1` to its end; the environment carries `token` if given."""
    env = child_env("redis://127.0.0.1:1/0", "unused")
    env.pop("METRICS_API_TOKEN", None)
    if token is not None:
        env["METRICS_API_TOKEN"] = token
    url = base_url.replace("http://", "ws://") + "/api/metrics/ws"
    watch = CliProcess(["watch", "--url", url, "--count", "1", *args], env)
    watch.start()
    assert watch.process is not None
    watch.process.wait(timeout=20)
    return watch


def test_watch_sends_the_token_from_the_environment_or_the_option(guarded_api: str) -> None:
    for args, token in [((), TOKEN), (("--token", TOKEN), None)]:
        watch = run_watch(guarded_api, *args, token=token)
        try:
            assert watch.process is not None and watch.process.returncode == 0
            assert len(watch.stdout_text().splitlines()) == 1
            assert TOKEN not in watch.stderr_text()  # the URL it prints carries no token
        finally:
            watch.stop()


def test_watch_without_the_token_stops_with_a_clear_message(guarded_api: str) -> None:
    watch = run_watch(guarded_api, token=None)
    try:
        assert watch.process is not None and watch.process.returncode == 2
        assert "HTTP 401" in watch.stderr_text() and "--token" in watch.stderr_text()
    finally:
        watch.stop()


def test_dashboard_passes_the_token_from_its_url(guarded_api: str) -> None:
    require_chromium()
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{guarded_api}/#token={TOKEN}")
        expect_state(page, "live")  # the WebSocket took the token (?token=)
        assert TOKEN not in page.url  # taken out of the address bar...
        # ... and kept for the tab; with the socket refused, REST polling sends it as a header.
        page.route_web_socket("**/api/metrics/ws?token=*", lambda ws: ws.close(code=1011))
        page.reload()
        expect_state(page, "polling")
        expect_panels(page, "fresh")
