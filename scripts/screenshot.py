#!/usr/bin/env python3
"""Save docs/dashboard.png: the dashboard on the browser tests' known data.

Run from the repository root: `.venv/bin/python scripts/screenshot.py [OUTPUT]`. It starts a
private redis-server and an API on free ports, seeds them as tests/dashboard_seed.py does,
and photographs the page in headless Chromium once every panel is fresh.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file: make the project's packages importable

from metrics_store.settings import Settings  # noqa: E402
from tests.browser import chromium, expect_panels, expect_state  # noqa: E402
from tests.dashboard_seed import API_ENV, seed  # noqa: E402
from tests.processes import ApiProcess, child_env  # noqa: E402
from workers.redis_process import RedisServerProcess  # noqa: E402


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    prefix = "screenshot"
    with tempfile.TemporaryDirectory() as data_dir:
        server = RedisServerProcess(Path(data_dir))
        server.start()
        try:
            seed(Settings(redis_url=server.url, key_prefix=prefix, node="worker-1"))
            with ApiProcess(child_env(server.url, prefix, **API_ENV)) as api, chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{api.base_url}/")
                expect_state(page, "live")
                expect_panels(page, "fresh")
                page.screenshot(path=str(output), full_page=True)
        finally:
            server.stop()
    print(f"saved {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
