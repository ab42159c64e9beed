"""The Audit Logs API and page: a FastAPI app that the Airflow plugin mounts at ``/audit-logs``.

Every ``/api/v1`` endpoint needs a caller: an organization API key in ``X-API-Key`` (its own
organization only) or an Airflow user's JWT, as ``Authorization: Bearer`` or the ``_token``
cookie the Airflow UI sets (Admin role: every organization). Reads stream from the lake one
organization-day at a time, so even a 90-day export never holds more than a day in memory.

Every request's work is bounded: the time range (MAX_RANGE), the filter (its length and terms),
and the lake rows it may scan and the seconds it may take (``Budget``; past either: 503). API keys
are verified off the event loop, cached briefly, and locked out per key id after repeated failures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jwt import InvalidTokenError
from starlette.concurrency import run_in_threadpool

from . import archive as ar
from . import lake as lk
from .apikeys import KeyVerifier, TooManyAttempts
from .config import RETENTION_DAYS, Roots
from .connections import open_root
from .exports import csv_chunks
from .filters import QueryError, parse
from .inputs import BadInput, check_range, parse_date, parse_time, validate_organization_id
from .query import Budget, BudgetExceeded, EventFilter, iter_days, rows
from .storage import Root, describe_error, error_line

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
PAGE_SIZES = (10, 25, 50, 100)
REQUEST_SECONDS = float(os.environ.get("AUDIT_API_REQUEST_SECONDS", "10"))
"""Wall-clock budget of one events request (an export gets EXPORT_SECONDS): past it, 503."""
EXPORT_SECONDS = float(os.environ.get("AUDIT_API_EXPORT_SECONDS", "300"))
MAX_SCANNED_ROWS = int(os.environ.get("AUDIT_API_MAX_SCANNED_ROWS", "20000000"))
"""Lake rows one request may read before it is refused (503): about a year of a busy organization."""
STORAGE_RETRY_AFTER_SECONDS = 30
"""What a 503 for failing storage asks a client to wait before trying again."""
TOKEN_COOKIE = "_token"  # where the Airflow UI keeps the user's JWT (airflow.api_fastapi.auth.managers)

TokenVerifier = Callable[[str], Awaitable[tuple[str, bool]]]
"""A JWT -> (user name, is Admin); raises jwt.InvalidTokenError on an invalid or expired token."""


class ApiError(Exception):
    """An answer other than 200: status code and a one-line message for the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass(frozen=True)
class Caller:
    """Who is asking: an API key's organization, or an Airflow user (Admins see every organization)."""

    name: str
    organization_id: str | None = None
    admin: bool = False


async def airflow_user(token: str) -> tuple[str, bool]:
    """Verify ``token`` with the api-server's auth manager; the user's name and whether they are Admin."""
    from airflow.api_fastapi.app import get_auth_manager

    user = await get_auth_manager().get_user_from_token(token)
    return user.get_name(), is_admin(user)


def is_admin(user: object) -> bool:
    """Admin role: SimpleAuthManager's ``role`` or FAB's ``roles`` list."""
    role = getattr(user, "role", None)
    roles = [getattr(r, "name", r) for r in getattr(user, "roles", None) or []]
    return str(role or "").upper() == "ADMIN" or any(str(r).upper() == "ADMIN" for r in roles)


def bearer_token(request: Request) -> str | None:
    """The JWT the caller sent: the Authorization header wins over the UI's cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(TOKEN_COOKIE) or None


def resolve_organization(caller: Caller, requested: str | None) -> str:
    """The organization a request reads: a key's own by default; 403 for any other it may not see."""
    if requested is not None:
        validate_organization_id(requested)
    if caller.organization_id is not None:
        if requested not in (None, caller.organization_id):
            raise ApiError(403, f"this API key belongs to {caller.organization_id!r}, not {requested!r}")
        return caller.organization_id
    if not caller.admin:
        raise ApiError(403, f"Airflow user {caller.name!r} is not an Admin: only Admins read audit logs")
    if not requested:
        raise ApiError(400, "organizationId is required for an Airflow user")
    return requested


def time_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """startTime and endTime, both required ISO 8601 with timezone, start <= end, at most MAX_RANGE apart."""
    if not start or not end:
        raise BadInput(f"{'startTime' if not start else 'endTime'} is required (ISO 8601 with timezone)")
    first, last = parse_time(start, "startTime"), parse_time(end, "endTime")
    check_range(first, last, "startTime", "endTime")
    return first, last


def query_filter(
    organization_id: str, start: datetime, end: datetime, q: str | None, search: str | None = None
) -> EventFilter:
    """The EventFilter for a request (searchTerm becomes a free-text term); a q error is a 400 naming its position."""
    try:
        query = parse(q)
    except QueryError as exc:
        raise ApiError(400, f"q: {exc}", position=exc.position) from None
    return EventFilter(organization_id, start, end, query.with_fields(search, search_name="searchTerm"))


def page_of_events(
    lake: Root, flt: EventFilter, page: int, size: int, budget: Budget | None = None
) -> tuple[list[dict], int]:
    """One page of rows, newest first, and the total; reads one day at a time, keeping only the page."""
    offset, total, pieces = (page - 1) * size, 0, []
    for frame in iter_days(lake, flt, newest_first=True, budget=budget):
        first, stop = max(offset - total, 0), min(offset + size - total, frame.height)
        if stop > first:
            pieces.append(rows(frame).reverse().slice(first, stop - first))
        total += frame.height
    return (pl.concat(pieces).to_dicts() if pieces else []), total


def organizations(lake: Root) -> list[str]:
    """Every organization with a partition in the lake."""
    return sorted({org for _, org in lk.partition_row_counts(lake)})


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def archive_listing(exports: Root, organization_id: str, page: int, size: int) -> dict[str, Any]:
    """One page of archived days, newest first, with every version and the day's verification state.

    Verification of the page: the whole chain (small entries) and the CSVs of the page's days.
    """
    from .verify import verify_organization

    paths = ar.list_org(exports, organization_id)
    days = ar.day_files(paths, organization_id)
    dates = sorted((d for d, files in days.items() if any(f.is_manifest for f in files)), reverse=True)
    shown = dates[(page - 1) * size : page * size]
    report = verify_organization(exports, organization_id, yesterday(), days=shown, paths=paths)
    codes: dict[date, set[str]] = {}
    for problem in report.problems:
        parsed = ar.parse_name(problem.file, organization_id)
        when = problem.day or (parsed.day if parsed else None)
        if when:
            codes.setdefault(when, set()).add(problem.code)
    items = []
    for day in shown:
        versions = [_version_view(f, report.bodies.get(f.path) or {}) for f in days[day] if f.is_manifest]
        latest = versions[-1]
        items.append(
            {
                "date": day.isoformat(),
                **{key: latest[key] for key in ("version", "rows", "bytes", "sha256")},
                "exportedAt": latest["createdAt"],
                "versions": versions,
                "verification": {"ok": not codes.get(day), "problems": sorted(codes.get(day, ()))},
            }
        )
    return {
        "items": items,
        "total": len(dates),
        "page": page,
        "pageSize": size,
        "missingDays": sorted(d.isoformat() for d, found in codes.items() if "missing_day" in found),
    }


def _version_view(manifest: ar.ArchiveFile, body: dict[str, Any]) -> dict[str, Any]:
    """One archived version as the listing shows it: its number from the file's name (which the
    download links use), the rest as its manifest says (null where a damaged one says nothing)."""
    return {
        "version": manifest.version,
        **{key: body.get(key) for key in ("file", "rows", "bytes", "sha256")},
        "createdAt": body.get("created_at"),
        "signed": "signature" in body,
    }


def error_body(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


def create_app(roots: Callable[[], Roots] = Roots.from_env, verify_token: TokenVerifier = airflow_user) -> FastAPI:
    """The app; ``roots`` says where the lake and exports are (read per request), ``verify_token`` checks JWTs."""
    # No Swagger UI (it would load third-party scripts into Airflow's origin); the OpenAPI JSON
    # is served to authenticated callers only, below.
    app = FastAPI(title="Audit Logs", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    keys = KeyVerifier()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_body(exc.status, exc.message, **exc.extra)

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return error_body(400, str(exc))

    @app.exception_handler(BudgetExceeded)
    async def _over_budget(request: Request, exc: BudgetExceeded) -> JSONResponse:
        return error_body(503, str(exc))

    @app.exception_handler(TooManyAttempts)
    async def _locked_out(request: Request, exc: TooManyAttempts) -> JSONResponse:
        response = error_body(429, str(exc))
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception) -> JSONResponse:
        """Storage down or a damaged file: a JSON answer for this request alone, the reason in the log
        (never to the caller: it may name internal endpoints)."""
        log.error("%s %s failed: %s", request.method, request.url.path, error_line(exc))
        if isinstance(exc, OSError) or describe_error(exc) is not None:
            response = error_body(503, "the audit storage failed to answer: try again later")
            response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_SECONDS)
            return response
        return error_body(500, f"internal error ({type(exc).__name__}): the server's log has the detail")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_body(400, f"{where}: {first.get('msg', 'invalid')}")

    def lake_root() -> Root:
        return open_root(roots().lake)

    def key_organization(key: str) -> str | None:
        """Blocking (storage, scrypt): runs in the thread pool, never on the event loop."""
        return keys.organization_for(lake_root(), key)

    async def caller(request: Request) -> Caller:
        key = request.headers.get("x-api-key")
        if key is not None:
            organization = await run_in_threadpool(key_organization, key)
            if organization is None:
                raise ApiError(401, "invalid API key")
            return Caller(f"api-key:{organization}", organization_id=organization)
        token = bearer_token(request)
        if not token:
            raise ApiError(401, "authentication required: send X-API-Key or an Airflow token")
        try:
            name, admin = await verify_token(token)
        except InvalidTokenError as exc:  # expired, forged or undecodable: all the same to the caller
            log.info("rejected Airflow token: %s", type(exc).__name__)
            raise ApiError(401, "invalid or expired Airflow token") from None
        return Caller(name, admin=admin)

    def scope(organizationId: str | None = None, who: Caller = Depends(caller)) -> str:
        return resolve_organization(who, organizationId)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(who: Caller = Depends(caller)) -> dict:
        """The API's OpenAPI description, for signed-in users and API-key holders only."""
        return app.openapi()

    @app.get("/api/v1/organizations")
    def list_organizations(who: Caller = Depends(caller)) -> dict:
        """The organizations the caller may read (an Admin: every one in the lake)."""
        orgs = organizations(lake_root()) if who.admin else [who.organization_id] if who.organization_id else []
        return {"user": who.name, "admin": who.admin, "organizations": orgs}

    @app.get("/api/v1/events")
    def events(
        organization: str = Depends(scope),
        startTime: str | None = None,
        endTime: str | None = None,
        q: str | None = None,
        page: int = Query(1),
        pageSize: int = Query(25),
        searchTerm: str | None = None,
    ) -> dict:
        """One page of the organization's events in [startTime, endTime] matching q (and searchTerm), newest first."""
        if pageSize not in PAGE_SIZES:
            raise BadInput(f"pageSize {pageSize} is not one of {', '.join(map(str, PAGE_SIZES))}")
        if page < 1:
            raise BadInput(f"page {page} is not a page number: pages start at 1")
        flt = query_filter(organization, *time_range(startTime, endTime), q, search=searchTerm)
        budget = Budget(seconds=REQUEST_SECONDS, rows=MAX_SCANNED_ROWS)
        items, total = page_of_events(lake_root(), flt, page, pageSize, budget)
        return {"items": items, "total": total, "page": page, "pageSize": pageSize}

    @app.get("/api/v1/audit-log/export")
    def export(
        organization: str = Depends(scope),
        startTime: str | None = None,
        endTime: str | None = None,
        searchTerm: str | None = None,
        q: str | None = None,
    ) -> StreamingResponse:
        """CSV in the daily-export format, streamed one day at a time."""
        start, end = time_range(startTime, endTime)
        flt = query_filter(organization, start, end, q, search=searchTerm)
        name = f"audit-log_{organization}_{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}.csv"
        budget = Budget(seconds=EXPORT_SECONDS, rows=MAX_SCANNED_ROWS)  # past it, the stream ends unfinished
        return StreamingResponse(
            csv_chunks(iter_days(lake_root(), flt, budget=budget)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def exports_root() -> Root:
        return open_root(roots().exports)

    @app.get("/api/v1/quarantine")
    def quarantine_view(
        who: Caller = Depends(caller),
        since: str | None = None,
        reason: str | None = None,
        page: int = Query(1),
        pageSize: int = Query(25),
    ) -> dict:
        """Admins: quarantine counts by day and reason since ``since`` (default 7 days, at most the
        retention window), and a page of records, newest first, with the replay outcome."""
        from . import quarantine
        from .events import REASONS

        if not who.admin:
            raise ApiError(403, "only Airflow Admins see the quarantine: it holds every organization's lines")
        if pageSize not in PAGE_SIZES:
            raise BadInput(f"pageSize {pageSize} is not one of {', '.join(map(str, PAGE_SIZES))}")
        if page < 1:
            raise BadInput(f"page {page} is not a page number: pages start at 1")
        if reason is not None and reason not in REASONS:
            raise BadInput(f"reason {reason!r} is not a quarantine reason: one of {', '.join(REASONS)}")
        today = datetime.now(UTC).date()
        start = parse_date(since, "since") if since else today - timedelta(days=7)
        if (today - start).days > RETENTION_DAYS:
            raise BadInput(f"since {start.isoformat()} is more than {RETENTION_DAYS} days ago")
        return quarantine.view(lake_root(), start, reason, page, pageSize)

    @app.get("/api/v1/archives")
    def archives(
        request: Request, organization: str = Depends(scope), page: int = Query(1), pageSize: int = Query(25)
    ) -> dict:
        """The organization's archived days, newest first, a page at a time: each day's versions (rows,
        SHA-256, download links for the CSV and its manifest) and its verification state."""
        if pageSize not in PAGE_SIZES:
            raise BadInput(f"pageSize {pageSize} is not one of {', '.join(map(str, PAGE_SIZES))}")
        if page < 1:
            raise BadInput(f"page {page} is not a page number: pages start at 1")
        listing = archive_listing(exports_root(), organization, page, pageSize)
        base = request.url_for("archive", day="DAY").path
        for item in listing["items"]:
            link = f"{base.replace('DAY', item['date'])}?organizationId={organization}"
            item["link"], item["manifestLink"] = link, link.replace("?", "/manifest?", 1)
            for version in item["versions"]:
                version["link"] = f"{link}&version={version['version']}"
                version["manifestLink"] = f"{item['manifestLink']}&version={version['version']}"
        return {"organizationId": organization, **listing}

    @app.get("/api/v1/archives/verify")
    def verify_archive(organization: str = Depends(scope)) -> dict:
        """Verify the organization's archive now (chain, hashes, rows, days through yesterday)."""
        from .verify import verify_organization

        report = verify_organization(exports_root(), organization, yesterday())
        return {
            "organizationId": organization,
            "through": yesterday().isoformat(),
            **report.as_dict(),
            "problemLines": [p.line() for p in report.problems],
        }

    def archived_file(organization: str, day: str, version: int | None, manifest: bool) -> StreamingResponse:
        when = parse_date(day, "date")
        exports = exports_root()
        paths = ar.list_org(exports, organization, ar.day_dir(exports, organization, when))
        files = [f for f in ar.day_files(paths, organization).get(when, []) if f.is_manifest == manifest]
        chosen = [f for f in files if version is None or f.version == version]
        if not chosen:
            what = ("manifest" if manifest else "CSV") + (f" version {version}" if version else "")
            raise ApiError(404, f"no archived {what} for {organization} on {when.isoformat()}")
        path = chosen[-1].path
        return StreamingResponse(
            exports.read_pieces(path),
            media_type="application/json" if manifest else "text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"'},
        )

    @app.get("/api/v1/archives/{day}", name="archive")
    def archive(
        day: str, organization: str = Depends(scope), version: int | None = Query(None, ge=1)
    ) -> StreamingResponse:
        """One archived daily CSV (the latest version, or ``version``), byte for byte."""
        return archived_file(organization, day, version, manifest=False)

    @app.get("/api/v1/archives/{day}/manifest")
    def archive_manifest(
        day: str, organization: str = Depends(scope), version: int | None = Query(None, ge=1)
    ) -> StreamingResponse:
        """The manifest of one archived version, byte for byte (its SHA-256 is what the chain links)."""
        return archived_file(organization, day, version, manifest=True)

    return app
