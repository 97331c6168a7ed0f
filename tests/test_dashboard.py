"""The dashboard in a real headless Chromium, against a real API process on known data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.browser import WAIT_MS, chromium, expect_panels, expect_state, require_chromium
from tests.dashboard_seed import API_ENV, NODES, OBJECTIVES, seed
from tests.processes import ApiProcess, child_env
from tests.waiting import wait_for, wait_until


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> None:
    """Before any other fixture starts: skip the module without Chromium (fail it in CI)."""
    require_chromium()


NO_VALUE = "\u2013"  # the page's en dash where a figure is unknown


# --- the page's number formats, in Python (app.js: sig3, measure, percent, count, bytes) -------
def js_num(value: float) -> str:
    """String(value) in JavaScript: positional from 1e-6 up, "1.5e-7" below."""
    if float(value).is_integer():
        return str(int(value))
    text = repr(float(value))
    if "e" not in text:
        return text
    if abs(value) >= 1e-6:
        return format(Decimal(text), "f")
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def js_sig3(value: float) -> str:
    """String(Number(value.toPrecision(3))): the exact binary value to 3 significant digits,
    a tie rounded away from zero."""
    if value == 0:
        return "0"
    exact = Decimal(value)
    return js_num(float(exact.quantize(Decimal(1).scaleb(exact.adjusted() - 2), ROUND_HALF_UP)))


def measure(value: float | None, unit: str) -> str:
    """A figure to 3 significant digits with its unit; the dash where the API has none."""
    return NO_VALUE if value is None else f"{js_sig3(value)} {unit}"


def ms_text(value: float | None) -> str:
    return measure(value, "ms")


def per_sec(value: float | None) -> str:
    return measure(value, "q/s")


def percent(value: float) -> str:
    """The API's percent (52.08) as the page shows it."""
    return f"{js_sig3(value)}%"


def percent_of(ratio: float) -> str:
    return percent(ratio * 100)


def count(value: int) -> str:
    """An integer with thousands separators (toLocaleString("en-US"))."""
    assert float(value).is_integer(), value
    return f"{int(value):,}"


def duration_text(seconds: float) -> str:
    """app.js duration()."""
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return measure(seconds / size, unit)
    return measure(seconds / 86400, "d")


def human_bytes(size: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return measure(value, units[unit])


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def api_env(redis_url: str, prefix: str) -> dict[str, str]:
    seed(Settings(redis_url=redis_url, key_prefix=prefix, node="worker-1"))
    return child_env(redis_url, prefix, **API_ENV)


@pytest.fixture
def api(api_env: dict[str, str]) -> Iterator[ApiProcess]:
    with ApiProcess(api_env) as process:
        yield process


@contextmanager
def open_page(
    browser: Browser,
    api: ApiProcess,
    width: int = 1400,
    height: int = 1000,
    prepare: Callable[[Page], None] | None = None,
) -> Iterator[Page]:
    """The dashboard in a fresh browser context; fails on page errors or outside requests."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    if prepare is not None:
        prepare(page)
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda r: None if r.url.startswith(api.base_url) else outside.append(r.url))
    try:
        page.goto(f"{api.base_url}/")
        yield page
    finally:
        context.close()
    assert errors == [], "uncaught errors in the page"
    assert outside == [], "the page loaded something from outside the API"


@pytest.fixture
def page(browser: Browser, api: ApiProcess) -> Iterator[Page]:
    with open_page(browser, api) as opened:
        yield opened


def expect_texts(page: Page, expected: dict[str, str]) -> None:
    for test_id, text in expected.items():
        expect(page.get_by_test_id(test_id), f"{test_id}").to_have_text(text, timeout=WAIT_MS)


def expect_current(page: Page, expected: Callable[[], dict[str, str]], what: str) -> None:
    """Until the page shows what `expected()` (read from the API again each time) says.

    For figures that move with the clock (burn windows, the chart point holding now): a value
    read once could change between the API's answer and the page's."""
    differences: list[object] = []

    def same() -> bool:
        wanted = expected()
        shown = {test_id: page.get_by_test_id(test_id).text_content() for test_id in wanted}
        differences[:] = [(k, shown[k], v) for k, v in wanted.items() if shown[k] != v]
        return not differences

    try:
        wait_until(same, WAIT_MS / 1000, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (test id, shown, expected): {differences}") from None


def wait_current(page: Page) -> None:
    expect_state(page, "live")
    expect_panels(page, "fresh")


# --- what each panel must show -----------------------------------------------------------------
def query_texts(queries: dict[str, Any]) -> dict[str, str]:
    texts = {
        "q-total": count(queries["totalQueries"]),
        "q-latency": ms_text(queries["avgLatencyMs"]),
    }
    texts |= {f"dist-{tier}": count(n) for tier, n in queries["tierDistribution"].items()}
    return texts


def query_chart_texts(api: ApiProcess) -> dict[str, str]:
    """The query chart's peak and top label: they move as its 10-second buckets pass."""
    rates = api.get("/api/metrics/queries").json()["queryRate"]
    return {
        "query-peak": per_sec(max([0, *rates])),
        "query-y-max": per_sec(max([*rates, 0.1]) * 1.1),
    }


def tier_texts(tiers: list[dict[str, Any]]) -> dict[str, str]:
    texts = {}
    for tier in tiers:
        t = f"tier-{tier['name']}"
        texts[f"{t}-requests"] = count(tier["requestCount"])
        texts[f"{t}-errors"] = percent_of(tier["errorRate"])
        texts[f"{t}-tps"] = measure(tier["tokensPerSec"][-1], "tok/s")
        texts[f"{t}-latency"] = ms_text(tier["latencyMs"][-1])
        texts[f"{t}-rps"] = per_sec(tier["requestsPerSec"])
        texts[f"{t}-goodput"] = per_sec(tier["goodputPerSec"])
    return texts


def resource_texts(r: dict[str, Any]) -> dict[str, str]:
    texts = {}
    for part in ("vram", "memory"):
        texts[f"res-{part}-used"] = js_sig3(r[part]["used"])
        texts[f"res-{part}-total"] = measure(r[part]["total"], "GiB")
        texts[f"res-{part}-percent"] = percent(r[part]["percent"])
    return texts | {
        "res-cpu-percent": percent(r["cpu"]["percent"]),
        "res-cpu-cores": count(r["cpu"]["cores"]),
        "res-faiss": human_bytes(r["faissIndexSize"]),
        "res-redis": human_bytes(r["redisCacheSize"]),
        "res-connections": count(r["activeConnections"]),
        "res-jobs-active": count(r["threadPoolStatus"]["active"]),
        "res-jobs-queued": count(r["threadPoolStatus"]["queued"]),
        "res-disk-read": measure(r["diskIO"]["readMBps"], "MB/s"),
        "res-disk-write": measure(r["diskIO"]["writeMBps"], "MB/s"),
        "res-net-rx": measure(r["networkThroughput"]["rxMBps"], "MB/s"),
        "res-net-tx": measure(r["networkThroughput"]["txMBps"], "MB/s"),
    }


def routing_texts(routing: dict[str, Any]) -> dict[str, str]:
    accuracy = routing["accuracyMetrics"]
    texts = {
        "r-total": count(accuracy["totalDecisions"]),
        "r-time": ms_text(accuracy["avgDecisionTimeMs"]),
        "r-fallback": percent_of(accuracy["fallbackRate"]),
    }
    for cell in routing["decisionMatrix"]:
        key = f"{cell['complexity']}-{cell['tier']}"
        texts[f"cell-{key}"] = count(cell["count"])
        texts[f"score-{key}"] = js_sig3(cell["avgScore"])
    for model in routing["modelAvailability"]:
        texts[f"avail-{model['tier']}"] = f"{count(model['available'])}/{count(model['total'])}"
    return texts


def resources_counting_the_page(api: ApiProcess, path: str = "/api/metrics/resources") -> Any:
    """`path`'s answer once it counts the page's own WebSocket.

    The replica reports its client count with its once-a-second heartbeat, so an answer read
    right after the page connected may not count it yet, while the page's next update does.
    """
    return wait_for(
        lambda: api.get(path).json(),
        lambda body: body["activeConnections"] >= 1,
        10,
        "the page's connection to count",
    )


# --- tests -------------------------------------------------------------------------------------
def test_each_panel_shows_what_the_rest_api_returns(page: Page, api: ApiProcess) -> None:
    wait_current(page)
    queries = api.get("/api/metrics/queries").json()
    tiers = api.get("/api/metrics/tiers").json()["tiers"]
    resources = resources_counting_the_page(api)
    routing = api.get("/api/metrics/routing").json()
    assert queries["totalQueries"] > 0 and len(resources["nodes"]) == len(NODES)  # seeded
    assert [t["goodputPerSec"] is None for t in tiers] == [False, True, False]  # Q3: no objective

    expect_texts(page, query_texts(queries))
    expect_current(page, lambda: query_chart_texts(api), "the query chart's peak and top")
    expect(page.get_by_test_id("query-chart")).to_have_attribute(
        "data-points", str(len(queries["queryRate"]))
    )
    expect_texts(page, tier_texts(tiers))
    for tier in tiers:
        spark = page.get_by_test_id(f"tier-{tier['name']}-tps-spark")
        expect(spark).to_have_attribute("data-points", str(len(tier["tokensPerSec"])))
    expect_texts(page, resource_texts(resources))
    expect_texts(page, routing_texts(routing))


def test_node_selector_shows_one_nodes_resources(page: Page, api: ApiProcess) -> None:
    wait_current(page)
    select = page.get_by_test_id("node-select")
    expect(select.locator("option")).to_have_text(["All nodes", *NODES], timeout=WAIT_MS)
    select.select_option("gpu-b")
    one = resources_counting_the_page(api, "/api/metrics/resources?node=gpu-b")
    expect_texts(page, resource_texts(one))
    select.select_option("")
    expect_texts(page, resource_texts(resources_counting_the_page(api)))


def test_outage_marks_data_stale_and_recovery_needs_no_reload(
    page: Page, api: ApiProcess, api_env: dict[str, str], redis_url: str, prefix: str
) -> None:
    wait_current(page)
    total = api.get("/api/metrics/queries").json()["totalQueries"]
    page.evaluate("window.sameDocument = true")

    api.stop()
    expect_state(page, "reconnecting")
    expect_panels(page, "stale")
    expect(page.get_by_test_id("freshness-queries")).to_contain_text("stale")

    collector = MetricsCollector(Settings(redis_url=redis_url, key_prefix=prefix, node="w-2"))
    collector.record_query("Q3", 700.0, 64, 500.0)
    collector.flush(timeout_s=10)
    collector.close()

    with ApiProcess(api_env, port=api.port) as again:
        wait_current(page)
        expect_texts(page, {"q-total": count(total + 1)})
        expect_texts(page, query_texts(again.get("/api/metrics/queries").json()))
        assert page.evaluate("window.sameDocument") is True  # no reload happened


def test_narrow_window_fits_without_sideways_scrolling(browser: Browser, api: ApiProcess) -> None:
    with open_page(browser, api, width=380) as page:
        wait_current(page)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        # Nor does any figure run out of its own box (into its neighbour's).
        spilled = page.evaluate(
            "[...document.querySelectorAll('main dd')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.dataset.testid)"
        )
        assert spilled == []


def test_websocket_updates_make_the_page_live(browser: Browser, api: ApiProcess) -> None:
    # Playwright stands in for /api/metrics/ws, so the test decides what the socket says: the
    # first connection is ours; later ones are refused, as by a proxy that drops WebSockets.
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        if sockets:
            ws.close(code=1011, reason="refused by the test")
            return
        sockets.append(ws)

    def prepare(page: Page) -> None:
        page.route_web_socket("**/api/metrics/ws", route)

    with open_page(browser, api, prepare=prepare) as page:
        expect_state(page, "live")
        queries = api.get("/api/metrics/queries").json()
        update = {
            "type": "metrics_update",
            "timestamp": "2025-01-01T00:00:00Z",
            "queries": {**queries, "totalQueries": 4242},  # a number only the socket says
            "tiers": api.get("/api/metrics/tiers").json()["tiers"],
            "resources": api.get("/api/metrics/resources").json(),
            "routing": api.get("/api/metrics/routing").json(),
            "latency": api.get("/api/metrics/latency").json(),
            "slo": api.get("/api/metrics/slo").json(),
        }
        sockets[0].send(json.dumps(update))
        expect_texts(page, {"q-total": "4,242"})
        expect_panels(page, "fresh")
        expect_texts(page, routing_texts(update["routing"]))

        sockets[0].close()
        expect_state(page, "polling")
        expect_texts(page, {"q-total": count(queries["totalQueries"])})


# --- latency percentiles and the window selector ------------------------------------------------


def percentile_texts(tiers: list[dict[str, Any]], latency: dict[str, Any]) -> dict[str, str]:
    """Each tier card's p50/p95/p99 (from /tiers) and TTFT p95 (from /latency)."""
    ttft = {t["name"]: t["ttftMs"] for t in latency["tiers"]}
    texts = {}
    for tier in tiers:
        t = f"tier-{tier['name']}"
        for p in ("p50", "p95", "p99"):
            texts[f"{t}-{p}"] = ms_text(tier[f"{p}LatencyMs"])
        known = ttft[tier["name"]]
        texts[f"{t}-ttft"] = ms_text(known["p95"]) if known else NO_VALUE
    return texts


def latency_panel_texts(latency: dict[str, Any], tier: str) -> dict[str, str]:
    entry = next(t for t in latency["tiers"] if t["name"] == tier)
    texts = {f"lat-{p}": ms_text(entry["latencyMs"][p]) for p in ("p50", "p95", "p99", "p999")}
    return texts | {
        "lat-count": count(entry["latencyMs"]["count"]),
        "lat-ttft-p95": ms_text(entry["ttftMs"]["p95"]),
    }


def window_texts(api: ApiProcess, window: str, tier: str) -> dict[str, str]:
    """What every windowed panel must show for ?window=`window` (`tier` in the latency panel)."""
    suffix = f"?window={window}"
    tiers = api.get(f"/api/metrics/tiers{suffix}").json()["tiers"]
    latency = api.get(f"/api/metrics/latency{suffix}").json()
    return (
        query_texts(api.get(f"/api/metrics/queries{suffix}").json())
        | {f"tier-{t['name']}-requests": count(t["requestCount"]) for t in tiers}
        | percentile_texts(tiers, latency)
        | latency_panel_texts(latency, tier)
        | routing_texts(api.get(f"/api/metrics/routing{suffix}").json())
    )


def test_tier_cards_and_latency_panel_show_the_seeded_percentiles(
    page: Page, api: ApiProcess
) -> None:
    wait_current(page)
    tiers = api.get("/api/metrics/tiers").json()["tiers"]
    latency = api.get("/api/metrics/latency").json()
    assert all(t["ttftMs"] for t in latency["tiers"] if t["latencyMs"]["count"])  # seeded
    assert all(t["p99LatencyMs"] > t["p50LatencyMs"] > 0 for t in tiers)  # seeded

    expect_texts(page, percentile_texts(tiers, latency))
    first = latency["tiers"][0]["name"]
    expect(page.get_by_test_id("latency-tier")).to_have_value(first)
    expect_texts(page, latency_panel_texts(latency, first))
    chart = page.get_by_test_id("latency-chart")
    expect(chart.locator("path[data-percentile]")).to_have_count(3)
    # The whole window at once, from the server: its 18 points, not one per second since now.
    expect(chart).to_have_attribute("data-points", "18", timeout=WAIT_MS)
    expect_chart(page, api, "30m", first)
    expect(page.get_by_test_id("latency-from")).not_to_be_empty()
    expect_current(page, lambda: latency_top_text(api, "30m", first), "the latency chart's top")
    expect(page.get_by_test_id("latency-axis-title")).to_contain_text("each 100 s point")

    page.get_by_test_id("latency-tier").select_option("Q4")
    expect_texts(page, latency_panel_texts(latency, "Q4"))
    expect_chart(page, api, "30m", "Q4")


def chart_values(page: Page) -> dict[str, str]:
    paths = page.get_by_test_id("latency-chart").locator("path[data-percentile]")
    return {
        path.get_attribute("data-percentile") or "": path.get_attribute("data-values") or ""
        for path in paths.all()
    }


PERCENTILES = ("p50", "p95", "p99")


def history_values(api: ApiProcess, window: str, tier: str) -> dict[str, str]:
    """Each percentile line's values as the chart lists them, from /latency/history."""
    history = api.get(f"/api/metrics/latency/history?window={window}&tier={tier}").json()
    (entry,) = history["tiers"]
    return {p: ",".join("" if v is None else js_num(v) for v in entry[p]) for p in PERCENTILES}


def latency_top_text(api: ApiProcess, window: str, tier: str) -> dict[str, str]:
    """The latency chart's top label: 1.1 times the highest p99 of the history (1 ms at least)."""
    history = api.get(f"/api/metrics/latency/history?window={window}&tier={tier}").json()
    (entry,) = history["tiers"]
    return {"latency-y-max": ms_text(max([*(v for v in entry["p99"] if v is not None), 1]) * 1.1)}


def expect_chart(page: Page, api: ApiProcess, window: str, tier: str) -> None:
    """The chart draws the server's history of `window` for `tier`, with values in it."""
    found: list[dict[str, str]] = []

    def drawn() -> bool:
        wanted = history_values(api, window, tier)
        found[:] = [wanted, chart_values(page)]
        return found[0] == found[1] and any(found[0]["p99"].split(","))

    try:
        wait_until(drawn, WAIT_MS / 1000, f"the {window} history of {tier} in the chart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: wanted, shown = {found}") from None


def test_window_selector_rereads_every_windowed_panel(browser: Browser, api: ApiProcess) -> None:
    frames: list[object] = []  # what the page's WebSocket receives, counted from the start

    def prepare(page: Page) -> None:
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))

    with open_page(browser, api, prepare=prepare) as page:
        check_window_switch(page, api, frames)


def check_window_switch(page: Page, api: ApiProcess, frames: list[object]) -> None:
    wait_current(page)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    live = window_texts(api, "30m", "Q2") | query_texts(api.get("/api/metrics/queries").json())
    six_hours = window_texts(api, "6h", "Q2")
    assert six_hours["q-total"] != live["q-total"]  # the seed's older traffic

    page.get_by_test_id("window-select").select_option("6h")
    expect_texts(page, six_hours | {"q-total-label": "Queries (6 h)"})
    for panel in ("queries", "tiers", "routing", "latency", "latency/history"):
        assert any(f"/api/metrics/{panel}?window=6h" in url for url in requested), panel
    expect_chart(page, api, "6h", "Q2")  # the seed's slow hour, 3 hours ago, among its points
    expect(page.get_by_test_id("latency-axis-title")).to_contain_text("each 20 min point")
    expect(page.get_by_test_id("query-axis-title")).to_contain_text("one point per 20 min")
    expect(page.get_by_test_id("query-from")).not_to_be_empty()
    expect_panels(page, "fresh")
    # The live stream goes on (the resources panel); its 30-minute figures must not come back.
    seen = len(frames)

    def two_more_frames() -> bool:
        page.wait_for_timeout(100)  # Playwright delivers the socket's frames while it waits
        return len(frames) >= seen + 2

    wait_until(two_more_frames, 10, "two more socket updates")
    expect_texts(page, {"q-total": six_hours["q-total"], "lat-count": six_hours["lat-count"]})

    page.get_by_test_id("window-select").select_option("30m")
    expect_texts(page, {"q-total": live["q-total"], "q-total-label": "Queries (30 min)"})
    wait_current(page)


# --- objectives and goodput -----------------------------------------------------------------
def slo_texts(api: ApiProcess) -> dict[str, str]:
    """What each objective's card must show, from /api/metrics/slo."""
    texts = {}
    for o in api.get("/api/metrics/slo").json()["objectives"]:
        card = f"slo-{o['name']}"
        texts[f"{card}-state"] = o["state"]
        texts[f"{card}-budget"] = percent_of(o["errorBudgetRemaining"])
        for window, rate in o["burnRates"].items():
            texts[f"{card}-burn-{window}"] = NO_VALUE if rate is None else f"{js_sig3(rate)}\u00d7"
        left = o["exhaustedInSeconds"]
        texts[f"{card}-exhausted"] = (
            "not burning"
            if left is None
            else "budget exhausted"
            if left <= 0
            else f"exhausted in {duration_text(left)}"
        )
    return texts


def test_slo_panel_shows_each_objectives_budget_burn_rates_and_state(
    page: Page, api: ApiProcess
) -> None:
    wait_current(page)
    objectives = api.get("/api/metrics/slo").json()["objectives"]
    names = [o["name"] for o in OBJECTIVES["objectives"]]
    assert [o["name"] for o in objectives] == names
    assert [o["state"] for o in objectives] == ["page", "ticket", "ok"]  # seeded
    assert objectives[2]["exhaustedInSeconds"] > 0 and objectives[0]["exhaustedInSeconds"] == 0

    expect_current(page, lambda: slo_texts(api), "the objectives' figures")
    expect(page.get_by_test_id("slo-empty")).to_be_hidden()
    expect_texts(page, {"slo-summary": "1 page \u00b7 1 ticket \u00b7 1 ok"})
    for name, state in zip(names, ("page", "ticket", "ok"), strict=True):
        expect(page.get_by_test_id(f"slo-{name}")).to_have_attribute("data-state", state)
    # The states look different, not only read differently: each badge its own colours.
    looks = {
        page.get_by_test_id(f"slo-{name}-state").evaluate(
            "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor].join()"
        )
        for name in names
    }
    assert len(looks) == 3
    # The budget bar: empty when overspent, the share left otherwise.
    widths = [
        float(
            page.get_by_test_id(f"slo-{name}").locator(".bar i").evaluate("e => e.style.width")[:-1]
        )
        for name in names
    ]
    assert widths == [0, 0, pytest.approx(objectives[2]["errorBudgetRemaining"] * 100)]


def test_slo_panel_says_when_no_objective_is_defined_and_follows_a_change(
    page: Page, api: ApiProcess
) -> None:
    wait_current(page)
    expect(page.get_by_test_id("slo-list").locator("[data-state]")).to_have_count(3)
    cleared = httpx.put(f"{api.base_url}/api/metrics/slo/definitions", json={"objectives": []})
    assert cleared.status_code == 200, cleared.text
    # The next live update carries the empty set: no reload, no card left.
    expect(page.get_by_test_id("slo-empty")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_test_id("slo-list").locator("[data-state]")).to_have_count(0)
    expect_texts(page, {"slo-summary": ""})
    expect(page.get_by_test_id("panel-slo")).to_have_attribute("data-state", "fresh")


def test_tier_cards_show_goodput_beside_throughput(page: Page, api: ApiProcess) -> None:
    wait_current(page)
    tiers = api.get("/api/metrics/tiers").json()["tiers"]
    q2, q3, q4 = tiers
    assert 0 < q2["goodputPerSec"] < q2["requestsPerSec"]  # seeded: Q2's errors are not good
    assert q3["goodputPerSec"] is None and q4["goodputPerSec"] == 0  # none covers Q3; Q4 all slow
    expect_texts(
        page, {k: v for k, v in tier_texts(tiers).items() if k.endswith(("rps", "goodput"))}
    )
    expect_texts(page, {"tier-Q3-goodput": NO_VALUE, "tier-Q4-goodput": "0 q/s"})


# --- number formats and the tiers panel's layout ---------------------------------------------
FORMAT_SAMPLES = [0, 1, 8, 0.1, 0.5, 0.125, 0.0004321, 0.0433, 2.675, 4.445, 99.95, 425.002,
                  563.228, 999.5, 1234.5, 4222.33, 12345.678, -0.0641, -98.765, 0.0000123456,
                  1e-9]  # fmt: skip


def test_the_pages_formats_are_3_significant_digits_with_units(page: Page) -> None:
    """app.js's formatters give what the tests' Python twins expect, on awkward values."""
    wait_current(page)
    shown = page.evaluate(
        """samples => samples.map(v => [sig3(v), ms(v), perSec(v), percentOf(v),
                                        duration(Math.abs(v) * 1e4),
                                        bytes(Math.round(Math.abs(v) * 1e6))])""",
        FORMAT_SAMPLES,
    )
    wanted = [
        [js_sig3(v), ms_text(v), per_sec(v), percent_of(v), duration_text(abs(v) * 1e4),
         human_bytes(round(abs(v) * 1e6))]
        for v in FORMAT_SAMPLES
    ]  # fmt: skip
    assert shown == wanted
    assert page.evaluate("[count(1234567), count(0), ms(null), perSec(undefined)]") == [
        "1,234,567",
        "0",
        NO_VALUE,
        NO_VALUE,
    ]
    # No figure on the page has more than 3 significant digits (a count has no decimal point).
    shown_text = page.locator("main").inner_text()
    decimals = re.findall(r"\d[\d,]*\.\d+", shown_text)
    assert decimals  # the page does show some
    assert [d for d in decimals if len(re.sub(r"\D", "", d).lstrip("0")) > 3] == []


# The common screens: laptop, desktop, full HD and a phone.
SCREENS = [(1280, 800), (1440, 900), (1920, 1080), (390, 844)]
# The panel's padding and border, and a little more: what a filled panel may leave at its edges.
EDGE_PX = 20

TIER_BOXES = """() => {
  const box = (e) => {
    const r = e.getBoundingClientRect();
    return { x: r.left, y: r.top, right: r.right, bottom: r.bottom, width: r.width };
  };
  const panel = document.querySelector('[data-testid="panel-tiers"]');
  return { panel: box(panel), cards: [...panel.querySelectorAll(".tier")].map(box) };
}"""


def tier_layout_gaps(page: Page, tiers: int) -> list[str]:
    """What leaves empty space in the tiers panel, read in one go (the cards are redrawn every
    second): the cards must fill each row's width and the panel's height."""
    boxes = page.evaluate(TIER_BOXES)
    panel, cards = boxes["panel"], boxes["cards"]
    if len(cards) != tiers:
        return [f"{len(cards)} cards, not {tiers}"]
    rows: dict[int, list[dict[str, float]]] = {}
    for card in cards:
        rows.setdefault(round(card["y"]), []).append(card)
    gaps = []
    for y, row in sorted(rows.items()):
        row.sort(key=lambda c: c["x"])
        left, right = row[0]["x"] - panel["x"], panel["right"] - row[-1]["right"]
        empty = panel["width"] - sum(c["width"] for c in row)
        if left > EDGE_PX or right > EDGE_PX:
            gaps.append(f"row at {y}: {left:.0f} px empty on the left, {right:.0f} px on the right")
        if empty >= min(c["width"] for c in row):
            gaps.append(f"row at {y}: {empty:.0f} px empty, a card's width or more")
    below = panel["bottom"] - max(c["bottom"] for c in cards)
    if below > EDGE_PX:
        gaps.append(f"{below:.0f} px empty under the cards")
    return gaps


# The number of lines each figure's text takes, by data-testid.
FIGURE_LINES = """ids => Object.fromEntries(ids.map(id => {
  const range = document.createRange();
  range.selectNodeContents(document.querySelector(`[data-testid="${id}"]`));
  return [id, new Set([...range.getClientRects()].map(r => Math.round(r.bottom))).size];
}))"""


def expect_tiers_fill_the_panel(page: Page, tiers: int, screen: tuple[int, int]) -> None:
    found: list[str] = []

    def filled() -> bool:
        found[:] = tier_layout_gaps(page, tiers)
        return not found

    try:
        wait_until(filled, WAIT_MS / 1000, f"the tier cards to fill the panel at {screen}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {found}") from None


@pytest.mark.parametrize("screen", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tier_cards_fill_the_tiers_panel(
    browser: Browser, api: ApiProcess, screen: tuple[int, int]
) -> None:
    with open_page(browser, api, width=screen[0], height=screen[1]) as page:
        wait_current(page)
        tiers = api.get("/api/metrics/tiers").json()["tiers"]
        expect_tiers_fill_the_panel(page, len(tiers), screen)
        # And no figure of a card wraps onto a second line.
        lines = page.evaluate(FIGURE_LINES, list(tier_texts(tiers)))
        assert {test_id: n for test_id, n in lines.items() if n != 1} == {}


@pytest.mark.parametrize("tier_count", [1, 4, 5, 7], ids=lambda n: f"{n}-tiers")
def test_tier_cards_fill_the_panel_whatever_the_number_of_tiers(
    browser: Browser, api: ApiProcess, tier_count: int
) -> None:
    """/tiers answers `tier_count` tiers (the seeded ones, renamed) and the socket is refused, so
    the page polls them: at every width, no row of cards leaves empty space."""
    seeded = api.get("/api/metrics/tiers").json()["tiers"]
    tiers = [{**seeded[i % len(seeded)], "name": f"T{i}"} for i in range(tier_count)]

    def prepare(page: Page) -> None:
        page.route_web_socket("**/api/metrics/ws", lambda ws: ws.close(code=1011, reason="test"))
        page.route("**/api/metrics/tiers*", lambda route: route.fulfill(json={"tiers": tiers}))

    with open_page(browser, api, prepare=prepare) as page:
        expect_state(page, "polling")
        for width, height in SCREENS:
            page.set_viewport_size({"width": width, "height": height})
            expect_tiers_fill_the_panel(page, tier_count, (width, height))
