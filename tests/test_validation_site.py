"""The Great Expectations site under <lake>/_validation/: one suite and checkpoint, named asset and run,
an index across runs that costs one month of rows per batch, and pages that work with no network."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pytest

from include.audit import ingest as ingest_module
from include.audit.generate import generate
from include.audit.ingest import ingest
from include.audit.storage import Root
from include.audit.validation import ValidationFailed

from .helpers import event, write_lines

CHROMIUM = "/usr/bin/chromium"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I)


def two_runs(raw: str, lake: str, now) -> list[str]:
    """Two ingests of fresh events; the batch ids."""
    generate(raw, events=120, days=1, organizations=2, now=now - timedelta(hours=1), seed=1)
    first = ingest(raw, lake, now=now - timedelta(minutes=30)).batches
    generate(raw, events=80, days=1, organizations=2, now=now, seed=2)
    second = ingest(raw, lake, now=now).batches
    return [*first, *second]


def assert_self_contained(page: str) -> None:
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    for noise in ("newsletter", "__none__", "Data asset: None", "expectations/audit_events.html", "<script"):
        assert noise not in page


def test_one_suite_one_checkpoint_named_asset_and_run(roots, now):
    batches = two_runs(roots["raw"], roots["lake"], now)
    site = Path(roots["lake"]) / "_validation"
    for batch in batches:
        result = json.loads((site / f"{batch}.json").read_text())
        assert result["suite_name"] == "audit_events"
        assert result["meta"]["run_id"]["run_name"] == f"batch {batch}"
        assert result["meta"]["active_batch_definition"]["data_asset_name"] == "accepted_events"
        assert result["meta"]["checkpoint_id"]
        page = (site / f"{batch}.html").read_text()
        assert "Data asset: accepted_events" in page and batch in page and 'href="index.html"' in page
        assert_self_contained(page)
    index = (site / "index.html").read_text()
    assert_self_contained(index)
    assert all(f'href="{batch}.html"' in index for batch in batches)
    assert "audit_events on accepted_events" in index


def test_a_run_writes_its_own_files_and_one_month_of_index(roots, now, monkeypatch):
    two_runs(roots["raw"], roots["lake"], now)
    written: list[str] = []
    real = Root.write_bytes
    monkeypatch.setattr(Root, "write_bytes", lambda self, path, data: (written.append(path), real(self, path, data)))
    read: list[str] = []
    real_read = Root.read_bytes
    monkeypatch.setattr(Root, "read_bytes", lambda self, path: (read.append(path), real_read(self, path))[1])
    generate(roots["raw"], events=50, days=1, organizations=1, now=now + timedelta(minutes=5), seed=3)
    (batch,) = ingest(roots["raw"], roots["lake"], now=now + timedelta(minutes=5)).batches
    site = [Path(p).name for p in written if "/_validation/" in p]
    month = f"{now:%Y-%m}"
    assert sorted(site) == sorted(
        [f"{batch}.json", f"{batch}.html", f"runs-{month}.json", f"index-{month}.html", "index.html", "index.json"]
    )
    # no past run's page or result is read again
    assert not [p for p in read if "/_validation/" in p and Path(p).name[0].isdigit()]
    rows = json.loads((Path(roots["lake"]) / "_validation" / f"runs-{month}.json").read_text())
    assert len(rows) == 3 and len({r["batch_id"] for r in rows}) == 3


def test_a_failed_gate_is_listed_as_failed(roots, now, monkeypatch):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1"), event(event_id="e2", ip_address="999.1.1.1")])
    real_route = ingest_module.route
    monkeypatch.setattr(
        ingest_module,
        "route",
        lambda frame, window: real_route(frame, window).with_columns(reason=pl.lit(None, pl.String)),
    )
    with pytest.raises(ValidationFailed):
        ingest(roots["raw"], roots["lake"], now=now)
    (row,) = json.loads(next((Path(roots["lake"]) / "_validation").glob("runs-*.json")).read_text())
    assert row["success"] is False and any("ip_address" in f for f in row["failures"])
    assert 'class="failed"' in (Path(roots["lake"]) / "_validation" / "index.html").read_text()


@pytest.mark.s3
def test_the_site_is_written_to_an_s3_lake(s3_prefix, now, tmp_path):
    lake = f"{s3_prefix}/lake"
    batches = two_runs(str(tmp_path / "raw"), lake, now)
    root = Root.open(lake)
    index = root.read_bytes(root.join("_validation", "index.html")).decode()
    assert all(f'href="{batch}.html"' in index for batch in batches)
    assert_self_contained(root.read_bytes(root.join("_validation", f"{batches[-1]}.html")).decode())


# --- in the browser, with the network blocked --------------------------------------------------------


@pytest.fixture
def served_site(roots, now) -> Iterator[tuple[str, list[str]]]:
    """The lake's _validation folder over HTTP on loopback (as a person would browse a published copy)."""
    batches = two_runs(roots["raw"], roots["lake"], now)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(Path(roots["lake"], "_validation")))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", batches
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.browser
def test_pages_work_offline_in_chromium(served_site):
    from playwright.sync_api import sync_playwright

    base, batches = served_site
    attempted_outside: list[str] = []
    failed: list[str] = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            attempted_outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_loopback)
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("response", lambda response: response.status >= 400 and failed.append(response.url))
            page.goto(f"{base}/index.html", wait_until="networkidle")
            assert page.locator("tbody tr").count() == len(batches)
            page.click(f"text={batches[0]}")
            page.wait_for_load_state("networkidle")
            assert page.url == f"{base}/{batches[0]}.html"
            assert page.get_by_text("Data asset: accepted_events").is_visible()
            assert page.get_by_text(batches[0]).first.is_visible()
            # every link on a run page stays inside the site and answers
            links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
            for href in {h for h in links if not h.startswith("#")}:
                assert page.request.get(f"{base}/{href}").ok, href
            page.click("text=All validation runs")
            page.wait_for_load_state("networkidle")
            assert page.url == f"{base}/index.html"
        finally:
            browser.close()
    assert attempted_outside == []
    assert failed == []


def test_a_crashed_batch_leaves_no_dead_link_in_the_index(roots, now, monkeypatch):
    from include.audit import lake as lk

    generate(roots["raw"], events=600, days=1, organizations=2, now=now)
    real_commit, calls = lk.commit_event_files, {"n": 0}

    def crash_on_second_commit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash after validation, before the commit")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(lk, "commit_event_files", crash_on_second_commit)  # the events commit
    with pytest.raises(OSError):
        ingest(roots["raw"], roots["lake"], now=now, batch_bytes=20_000)
    monkeypatch.setattr(lk, "commit_event_files", real_commit)
    ingest(roots["raw"], roots["lake"], now=now, batch_bytes=20_000)
    site = Path(roots["lake"]) / "_validation"
    index = (site / "index.html").read_text()
    linked = set(re.findall(r'href="([^"#]+\.html)"', index))
    assert linked and all((site / name).exists() for name in linked)
    rows = json.loads(next(site.glob("runs-*.json")).read_text())
    assert len(rows) == len(linked - {"index.html"}) == len(list(site.glob("2*.html")))


def test_a_batch_id_that_looks_like_a_time_still_gets_its_page(roots, now):
    """dateutil reads 20261126T120000Z-9941a10a as a time with a 99-hour offset, which once broke GE's
    page title (and so the batch): the run name GE sees is never a bare batch id."""
    from include.audit.events import Window
    from include.audit.validation import validate_batch

    generate(roots["raw"], events=50, days=1, organizations=1, now=now, seed=3)
    ingest(roots["raw"], roots["lake"], now=now)
    accepted = pl.read_delta(str(Path(roots["lake"]) / "events"))
    report = validate_batch(Root.open(roots["lake"]), accepted, Window(now), "20261126T120000Z-9941a10a")
    assert report.success and Path(report.html_path).exists()
    assert "20261126T120000Z-9941a10a" in Path(report.html_path).read_text()
