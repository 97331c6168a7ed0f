"""Headless Chromium (Debian's package) driven by Playwright, shared by tests and scripts.

We never run `playwright install`: the browser is the system's, found at $CHROMIUM or
/usr/bin/chromium (scripts/ensure-chromium installs it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.tools import require_tool

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PANELS = ("queries", "tiers", "slo", "latency", "resources", "routing")
# Generous: these wait for conditions, they never measure speed.
WAIT_MS = 20_000


def require_chromium() -> str:
    """Chromium's path; else skip the calling test (fail it under CI=true)."""
    return require_tool(
        "chromium",
        CHROMIUM,
        install_hint="scripts/ensure-chromium installs it, or set CHROMIUM=/path/to/it",
    )


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def expect_state(page: Page, pattern: str) -> None:
    expect(page.get_by_test_id("connection-state")).to_have_text(
        re.compile(f"^({pattern})$"), timeout=WAIT_MS
    )


def expect_panels(page: Page, state: str) -> None:
    """Every panel in `state` (loading, fresh or stale)."""
    for panel in PANELS:
        expect(page.get_by_test_id(f"panel-{panel}")).to_have_attribute(
            "data-state", state, timeout=WAIT_MS
        )
