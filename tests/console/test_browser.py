"""The console in a real browser (slow: needs Playwright and a Chromium; not in the default suite).

    PHIP_CHROMIUM=/usr/bin/chromium pytest -m slow tests/console/test_browser.py

Signs in with the form, checks that the charts are drawn (when ECharts is in the package cache),
that an htmx filter replaces the scorecard and pushes the URL, that the drill-down pages through
htmx, that no script or style is refused by the page's Content-Security-Policy, and logs out.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _chromium() -> str:
    exe = os.environ.get("PHIP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("no Chromium (set PHIP_CHROMIUM)")
    return exe


def _serve(node: Any) -> tuple[str, Any]:
    import uvicorn

    from phip.api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_console_in_a_browser(node: Any, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    from fastapi.testclient import TestClient

    from phip.api.app import create_app
    from phip.console import assets
    from phip.security.accounts import add_user
    from tests.console.test_console import PASSWORD, _defects

    with node.store.engine.begin() as conn:
        add_user(conn, "wang", PASSWORD, "manager")
    with TestClient(create_app(node)) as c:
        _defects(c, node)
    charts = assets.path("echarts.min.js") is not None
    base, server = _serve(node)
    problems: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{base}/console/quality")
            assert "/console/login?next=" in page.url
            page.fill("input[name=username]", "wang")
            page.fill("input[name=password]", PASSWORD)
            page.click("form:has(input[name=username]) button[type=submit]")
            page.wait_for_load_state("networkidle")
            assert page.url == f"{base}/console/quality"
            if charts:
                assert page.locator("#chart-dimensions canvas").count() == 1
            assert page.locator("details table tbody tr").count() >= 2  # h1, h2 (and the master index's)
            page.select_option("select[name=institution]", "h2")
            page.wait_for_function("document.querySelectorAll('details table tbody tr').length === 1")
            assert "institution=h2" in page.url  # pushed: the filtered view can be bookmarked
            if charts:  # drawn again after the swap
                page.wait_for_function("document.querySelectorAll('#chart-dimensions canvas').length === 1")
            page.goto(f"{base}/console/quality/institution/h1")
            page.select_option("select[name=status]", "resolved")
            page.wait_for_function("document.querySelector('#findings').textContent.includes('没有符合条件')")
            assert "status=resolved" in page.url
            page.click("form.who button")
            page.wait_for_load_state("networkidle")
            assert page.url.endswith("/console/login?logged_out=1")
            page.goto(f"{base}/console/")
            assert "/console/login" in page.url
            browser.close()
    finally:
        server.should_exit = True
    assert problems == []
