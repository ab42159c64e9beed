"""End to end: the real Airflow api-server with the plugin, the page in headless Chromium (Debian's).

Starts ``airflow api-server`` on a free loopback port with a migrated SQLite database in its own
AIRFLOW_HOME and this repository's plugins/, over a small generated lake; logs in through
Airflow's login page, opens Audit Logs from the navigation, filters, pages, exports a CSV and
checks its rows against the lake, and saves a screenshot in test-output/.
"""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from include.audit.apikeys import create_key
from include.audit.catalog import ACTIONS
from include.audit.exports import HEADER
from include.audit.generate import generate, organization_ids
from include.audit.ingest import ingest

from .airflow_server import PASSWORD, api_server, bearer_token

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FILE_ACTIONS = {action for action, kind in ACTIONS.items() if kind == "File modifications"}

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An api-server with the plugin over a generated lake; yields its base URL and the lake's roots."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    now = datetime.now(UTC).replace(microsecond=0)
    roots = {name: str(home / name) for name in ("raw", "lake", "exports")}
    generate(
        roots["raw"],
        events=400,
        days=3,
        organizations=2,
        now=now - timedelta(minutes=5),
        seed=5,
        bad_share=0,
        redelivery_share=0,
    )
    ingest(roots["raw"], roots["lake"], now=now)
    with api_server(home, roots) as base:
        yield {"base": base, "roots": roots, "now": now, "log": home / "api-server.log"}


@pytest.fixture
def browser_page():
    """A page in Debian's Chromium (Playwright starts it with a fresh, empty profile)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1500, "height": 1000}, timezone_id="Asia/Kolkata"
        )
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_page_in_airflow_logs_in_filters_pages_and_exports(server, browser_page, tmp_path):
    page, base = browser_page, server["base"]
    OUTPUT.mkdir(exist_ok=True)
    org = organization_ids(1)[0]

    # Logging in through Airflow's own login form sets its session cookie (_token).
    page.goto(f"{base}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    # The navigation offers Platform Audit Logs (not Airflow's own "Audit Log"); it opens the plugin's page.
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Platform Audit Logs", exact=True).click()
    page.wait_for_url("**/plugin/audit-logs**")
    frame = page.frame_locator("iframe")
    rows = frame.locator("#rows tr")
    rows.first.wait_for()
    assert "Admin" in frame.locator("#who").inner_text()
    assert frame.locator("#org").input_value() == org
    total = int(frame.locator("#status").inner_text().split()[0])
    assert total > 25 and rows.count() == 25
    assert frame.locator("#range").inner_text() == f"1–25 of {total}"
    assert frame.locator("#time-header").inner_text() == "Time (UTC+05:30)"

    # Filtering with the filter language.
    frame.locator("#q").fill('-type:"File modifications" -action:GetJobRunLogs')
    frame.locator("#q").press("Enter")
    frame.locator("#range").filter(has_not_text=f"of {total}").wait_for()
    filtered = int(frame.locator("#range").inner_text().rsplit(" ", 1)[-1])
    assert 10 < filtered < total
    actions = set(frame.locator("#rows tr td:nth-child(3)").all_inner_texts())
    assert actions and not actions & ({"GetJobRunLogs"} | FILE_ACTIONS)

    # Paging with a rows-per-page choice.
    frame.locator("#page-size").select_option("10")
    frame.locator("#range").filter(has_text=f"1–10 of {filtered}").wait_for()
    first_page = frame.locator("#rows tr td:first-child").all_inner_texts()
    frame.locator("#next").click()
    frame.locator("#range").filter(has_text=f"11–20 of {filtered}").wait_for()
    second_page = frame.locator("#rows tr td:first-child").all_inner_texts()
    assert len(second_page) == 10 and max(second_page) <= min(first_page)  # newest first

    # Times switch to UTC: 5:30 behind India's time (a zone without daylight saving, so any date works).
    frame.locator("#utc").check()
    frame.locator("#time-header").filter(has_text="Time (UTC)").wait_for()
    shown = frame.locator("#rows tr td:first-child").first.inner_text()
    assert shown != second_page[0]
    assert datetime.fromisoformat(second_page[0]) - datetime.fromisoformat(shown) == timedelta(hours=5, minutes=30)

    # An error says what is wrong.
    frame.locator("#q").fill("actor:alice")
    frame.locator("#search").click()
    frame.locator("#error").filter(has_text="unknown qualifier").wait_for()
    assert rows.count() == 0 and frame.locator("#range").inner_text() == ""  # no stale rows under the banner
    assert frame.locator("#empty").is_hidden()
    frame.locator("#q").fill('-type:"File modifications" -action:GetJobRunLogs')
    frame.locator("#q").press("Enter")
    frame.locator("#range").filter(has_text=f"1–10 of {filtered}").wait_for()
    assert frame.locator("#error").is_hidden()

    page.screenshot(path=str(OUTPUT / "audit-logs-page.png"), full_page=True)

    # Export CSV for the current filter: the rows are the filtered events.
    with page.expect_download() as download_info:
        frame.locator("#export").click()
    path = tmp_path / "export.csv"
    download_info.value.save_as(path)
    assert path.read_text().splitlines()[0] == HEADER
    exported = list(csv.DictReader(path.open(newline="")))
    assert len(exported) == filtered
    assert {r["organization_id"] for r in exported} == {org}
    assert not {r["action"] for r in exported} & ({"GetJobRunLogs"} | FILE_ACTIONS)
    assert len({r["event_id"] for r in exported}) == filtered

    # Exporting a filter with an error explains it instead of downloading an error.
    frame.locator("#q").fill("ip:")
    frame.locator("#export").click()
    frame.locator("#error").filter(has_text="ip: needs a value").wait_for()


def test_the_plugin_registers_its_navigation_entry(server):
    token = bearer_token(server["base"])
    listing = urllib.request.Request(f"{server['base']}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(listing, timeout=30) as response:
        plugins = {p["name"]: p for p in json.load(response)["plugins"]}
    views = plugins["audit_logs"]["external_views"]
    assert [(v["name"], v["href"], v["url_route"]) for v in views] == [
        ("Platform Audit Logs", "/audit-logs/", "audit-logs")
    ]
    anonymous = urllib.request.Request(f"{server['base']}/audit-logs/api/v1/organizations")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    # No Swagger UI (no third-party scripts in Airflow's origin); the OpenAPI JSON only for signed-in callers.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{server['base']}/audit-logs/api/docs", timeout=30)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server['base']}/audit-logs/api/openapi.json", timeout=30)
    assert refused.value.code == 401
    described = urllib.request.Request(
        f"{server['base']}/audit-logs/api/openapi.json", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(described, timeout=30) as response:
        assert "/api/v1/events" in json.load(response)["paths"]


def test_page_without_airflow_login_asks_for_an_api_key(server, browser_page, tmp_path):
    page = browser_page
    org = organization_ids(2)[1]
    key = create_key(server["roots"]["lake"], org).key
    page.goto(f"{server['base']}/audit-logs/")
    page.locator("#api-key").wait_for()
    assert page.locator("#filters").is_hidden()
    page.locator("#api-key").fill(key[:-3] + "xyz")
    page.locator("#api-key").press("Enter")
    page.locator("#error").filter(has_text="invalid API key").wait_for()
    page.locator("#api-key").fill(key)
    page.locator("#api-key").press("Enter")
    page.locator("#rows tr").first.wait_for()
    assert page.locator("#who").inner_text() == f"Organization {org}"
    assert page.locator("#org-field").is_hidden()  # the picker is for Admins

    # A shortcut sets From; an empty result says so.
    page.get_by_role("button", name="Yesterday").click()
    page.locator("#q").fill('"no event has this text"')
    page.locator("#q").press("Enter")
    page.locator("#empty").wait_for()
    assert page.locator("#range").inner_text() == "0–0 of 0"

    page.locator("#q").fill("region:aws-us-west-2")
    page.locator("#q").press("Enter")
    page.locator("#rows tr").first.wait_for()
    shown = int(page.locator("#range").inner_text().rsplit(" ", 1)[-1])
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    path = tmp_path / "key-export.csv"
    download_info.value.save_as(path)
    exported = list(csv.DictReader(path.open(newline="")))
    assert len(exported) == shown and {(r["organization_id"], r["region"]) for r in exported} == {
        (org, "aws-us-west-2")
    }
    page.screenshot(path=str(OUTPUT / "audit-logs-page-api-key.png"), full_page=True)
