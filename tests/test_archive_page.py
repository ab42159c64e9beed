"""The archive part of the Audit Logs page in headless Chromium (Debian's), over the real app served by
uvicorn on loopback: an organization API key lists archived days with their versions and verification
state, downloads a version byte for byte, and runs "Verify now"."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from include.audit.apikeys import create_key
from include.audit.config import Roots
from include.audit.exports import export_daily
from include.audit.ingest import ingest

from .helpers import event, write_lines

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path):
    """The app over a small archive: acme on 24 and 25 November, the 24th amended (version 2)."""
    roots = Roots(str(tmp_path / "raw"), str(tmp_path / "lake"), str(tmp_path / "exports"))
    write_lines(
        Path(roots.raw) / "a.jsonl",
        [event(event_id=f"e{d}{i}", event_time=f"2026-11-{d}T1{i}:00:00Z") for d in (24, 25) for i in range(3)],
    )
    ingest(roots.raw, roots.lake, now=NOW)
    for day in (24, 25):
        export_daily(roots.lake, roots.exports, date(2026, 11, day))
    write_lines(Path(roots.raw) / "late.jsonl", [event(event_id="late", event_time="2026-11-24T23:00:00Z")])
    ingest(roots.raw, roots.lake, now=NOW)
    export_daily(roots.lake, roots.exports, date(2026, 11, 24))
    key = create_key(roots.lake, "acme").key

    import uvicorn

    from include.audit.api import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(roots=lambda: roots), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started
    try:
        yield {"base": f"http://127.0.0.1:{port}", "key": key, "exports": Path(roots.exports)}
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_archive_section_lists_versions_downloads_and_verifies(served, tmp_path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(f"{served['base']}/")
            page.locator("#api-key").fill(served["key"])
            page.locator("#api-key").press("Enter")
            page.locator("#archive-show").click()
            rows = page.locator("#archive-rows tr")
            rows.first.wait_for()
            assert rows.count() == 2
            newest, amended = rows.nth(0), rows.nth(1)
            assert newest.get_attribute("data-date") == "2026-11-25"
            assert "v1 CSV" in amended.inner_text() and "v2 CSV" in amended.inner_text()
            assert "verified" in amended.inner_text() and "4" in amended.locator("td").nth(2).inner_text()
            with page.expect_download() as download_info:
                amended.get_by_role("link", name="v1 CSV").click()
            saved = tmp_path / "v1.csv"
            download_info.value.save_as(saved)
            original = served["exports"] / "acme/2026/11/24/audit-log_acme_2026-11-24.csv"
            assert saved.read_bytes() == original.read_bytes()
            page.locator("#archive-verify").click()
            page.wait_for_function("document.getElementById('archive-verdict').textContent.includes('problem')")
            verdict = page.locator("#archive-verdict").inner_text()
            # the archive starts on the 24th: every later day through yesterday must be there
            assert verdict.startswith("Verified") or "missing_day" in verdict
            assert page.locator("#error").is_hidden()

            # tampered evidence is what the page is for: a manifest no longer JSON is a flagged row
            (served["exports"] / "acme/2026/11/25/audit-log_acme_2026-11-25.manifest.json").write_text("{ no")
            page.locator("#archive-show").click()
            page.wait_for_function("document.querySelector('#archive-rows tr td.bad') !== null")
            damaged = page.locator("#archive-rows tr").nth(0)
            assert damaged.get_attribute("data-date") == "2026-11-25" and "broken_chain" in damaged.inner_text()
            assert "broken_chain" in rows.nth(1).inner_text()  # the next entry (the 24th's v2) links to it
            assert "3 rows" in rows.nth(1).inner_text() and page.locator("#error").is_hidden()
        finally:
            browser.close()
