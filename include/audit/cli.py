"""The command line, a contract other tools call: ``python -m include.audit <command> ...``.

Each command prints a JSON result on stdout. Exit codes: 0 success, 2 bad input (nothing
written), 1 any other failure. Errors are one line on stderr; set AUDIT_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from . import config
from .inputs import BadInput, check_clock, parse_date, parse_time, validate_organization_id

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def redact(message: str) -> str:
    """``message`` with any configured secret replaced, for errors and logs."""
    from .storage import redact as redact_secrets

    return redact_secrets(message)


def _now(value: str | None) -> datetime:
    return check_clock(parse_time(value, "--now"), "--now") if value is not None else datetime.now(UTC)


def _out_file(url: str) -> str:
    """``--out``: a local path must name a file that can be written (not a folder, not below a file)."""
    from .storage import local_path_of

    path = local_path_of(url)
    if path is None:
        return url
    if not url.strip() or os.path.isdir(path):
        raise BadInput(f"--out {url!r} is a folder: name the CSV file to write")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise BadInput(f"--out {url!r} is below {parent}, which is a file")
    return url


def _day(value: str, name: str) -> date:
    """A day a command runs as or acts on (``--date``, ``--today``, ``--until``...)."""
    return check_clock(parse_date(value, name), name)


def _optional_day(value: str | None, name: str) -> date | None:
    """:func:`_day` for an optional flag: None only when it is absent (an empty value is bad input)."""
    return None if value is None else _day(value, name)


MAX_DAYS = 36_500
"""The most days a flag may count (100 years): more is a typo, and would overflow date arithmetic."""


def _whole(value: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    if maximum is not None and number > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
    return number


def _positive(value: str) -> int:
    return _whole(value, 1)


def _days(value: str) -> int:
    return _whole(value, 1, MAX_DAYS)


def _hours(value: str) -> int:
    return _whole(value, 0, MAX_DAYS * 24)


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {value!r}") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m include.audit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def roots(p: argparse.ArgumentParser, *names: str) -> None:
        for name in names:
            p.add_argument(
                f"--{name}-root",
                default=None,
                help=f"default: $AUDIT_{name.upper()}_ROOT or {config.DEFAULTS[f'AUDIT_{name.upper()}_ROOT']}",
            )

    p = sub.add_parser("ingest", help="load new raw files into the lake")
    roots(p, "raw", "lake")
    p.add_argument("--now", help="ingest time (ISO 8601 with timezone); default: the current time")
    p.add_argument("--days", type=_days, default=90, help="retention days (older events are quarantined)")
    p.add_argument(
        "--batch-mb",
        type=_positive,
        default=config.DEFAULT_BATCH_MB,
        help=f"decompressed raw megabytes per committed batch (bounds memory; default {config.DEFAULT_BATCH_MB})",
    )

    p = sub.add_parser("export-daily", help="write each organization's CSV for one UTC date")
    roots(p, "lake", "export")
    p.add_argument("--date", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--org", action="append", default=None, help="only these organizations (repeatable)")
    p.add_argument("--force", action="store_true", help="rewrite CSVs that are already current")

    p = sub.add_parser("export", help="export one organization's events in a time range")
    roots(p, "lake")
    p.add_argument("--org", required=True)
    p.add_argument("--start", required=True, help="ISO 8601 with timezone, inclusive")
    p.add_argument("--end", required=True, help="ISO 8601 with timezone, inclusive")
    p.add_argument("--search", help="case-insensitive substring of any exported column (a free-text term)")
    p.add_argument("--user", action="append", default=[], help="only this user email (repeatable; user: terms)")
    p.add_argument(
        "--action", nargs="+", action="extend", default=[], help="only these catalog actions (action: terms)"
    )
    p.add_argument(
        "--query",
        help="filter language, e.g. 'action:CreateJobRun -user:bot@acme.com' (README); "
        "at most 1,024 characters and 32 terms",
    )
    p.add_argument("--out", required=True, help="output CSV path or URL")

    p = sub.add_parser("retain", help="drop partitions older than the retention window, once exported")
    roots(p, "lake", "export")
    p.add_argument("--today", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--days", type=_days, default=90)
    p.add_argument("--force", action="store_true", help="drop even partitions whose export is missing or stale")
    p.add_argument("--dry-run", action="store_true", help="report what would be dropped (would_drop), drop nothing")

    p = sub.add_parser("compact", help="rewrite partitions of many small files as one sorted file each")
    roots(p, "lake")
    p.add_argument("--date", help="only this event date (YYYY-MM-DD); default: every partition that needs it")

    p = sub.add_parser("vacuum", help="delete files the lake's tables no longer reference, after a safe retention")
    roots(p, "lake")
    p.add_argument(
        "--hours",
        type=_hours,
        default=7 * 24,
        help="keep unreferenced files this long (default 168); 0 removes them all now, so use it only "
        "while no ingest or compaction runs: their files are unreferenced until they commit, and "
        "deleting them loses those events and leaves the table unreadable",
    )

    p = sub.add_parser(
        "replay", help="re-run quarantined lines through the current rules; those that pass enter the lake"
    )
    roots(p, "lake")
    p.add_argument(
        "--reason",
        nargs="+",
        action="extend",
        default=None,
        help="only these reasons (default: every reason that can replay)",
    )
    p.add_argument("--since", help="only records quarantined on or after this date (YYYY-MM-DD)")
    p.add_argument("--now", help="replay time (ISO 8601 with timezone); default: the current time")
    p.add_argument("--days", type=_days, default=90, help="retention days (as for ingest)")
    p.add_argument("--dry-run", action="store_true", help="say what would pass, change nothing")

    p = sub.add_parser("migrate", help="convert a lake written before the Delta tables, in place")
    roots(p, "lake")

    p = sub.add_parser("api-key", help="organization API keys for the Audit Logs API")
    keys = p.add_subparsers(dest="api_key_command", required=True, parser_class=_Parser)
    p = keys.add_parser("create", help="make a key; printed once, on the last line (only its hash is kept)")
    roots(p, "lake")
    p.add_argument("--org", required=True)
    p.add_argument("--expires", help="last UTC day the key works, YYYY-MM-DD (default: no expiry)")
    p = keys.add_parser("list", help="every key's id, organization, creation and expiry (no secrets)")
    roots(p, "lake")
    p = keys.add_parser("revoke", help="delete a key's record: the key stops working at once")
    roots(p, "lake")
    p.add_argument("--key-id", required=True, help="the key's id, as `api-key list` shows it")

    p = sub.add_parser(
        "status", help="events per date, quarantine per reason, freshness, export health per organization"
    )
    roots(p, "lake", "export", "raw")

    p = sub.add_parser("signing-key", help="Ed25519 keys that sign the archive's manifests and receipts")
    signing = p.add_subparsers(dest="signing_command", required=True, parser_class=_Parser)
    p = signing.add_parser("create", help="write DIR/audit-signing.key (0600) and DIR/audit-signing.pub")
    p.add_argument("--out", required=True, help="directory for the key pair")

    p = sub.add_parser("hold", help="legal holds: retention never drops a held organization's partitions")
    holds = p.add_subparsers(dest="hold_command", required=True, parser_class=_Parser)
    for name, what in (("place", "place a hold"), ("release", "release the hold"), ("list", "holds in force")):
        p = holds.add_parser(name, help=what)
        roots(p, "export")
        if name != "list":
            p.add_argument("--org", required=True)
    holds.choices["place"].add_argument("--reason", required=True, help="why (recorded in the chain)")
    holds.choices["place"].add_argument("--until", help="YYYY-MM-DD (UTC): the hold ends after this date")

    p = sub.add_parser("verify", help="check the archive offline: chain, hashes, rows, days, signatures")
    roots(p, "export")
    p.add_argument("--org", help="only this organization")
    p.add_argument(
        "--through", help="YYYY-MM-DD (UTC): every day through this one must be archived; default: yesterday"
    )
    p.add_argument("--public-key", help="PEM public key: every manifest and receipt must carry its signature")

    p = sub.add_parser("generate", help="write seeded synthetic raw event files")
    roots(p, "raw")
    p.add_argument("--events", type=_positive, default=10_000)
    p.add_argument("--days", type=_days, default=7)
    p.add_argument("--orgs", type=_positive, default=20)
    p.add_argument("--users-per-org", type=_positive, default=8)
    p.add_argument("--bad-share", type=_share, default=0.002, help="share of each kind of bad line")
    p.add_argument("--redelivery-share", type=_share, default=0.01)
    p.add_argument("--producers", type=_positive, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--now", help="generate up to this time (ISO 8601 with timezone)")
    p.add_argument("--no-gzip", action="store_true", help="write plain .jsonl")
    return parser


def run(args: argparse.Namespace) -> Any:
    """Execute a parsed command; returns its JSON-able result."""
    root, existing = config.creatable_root, config.existing_root  # a root a command reads must exist
    if args.command == "ingest":
        from .ingest import ingest

        now = _now(args.now)  # every value is checked before any root is touched
        return ingest(
            existing("AUDIT_RAW_ROOT", args.raw_root),
            root("AUDIT_LAKE_ROOT", args.lake_root),
            now=now,
            retention_days=args.days,
            batch_bytes=args.batch_mb << 20,
        ).as_dict()
    if args.command == "export-daily":
        from .exports import ExportsFailed, export_daily

        day = _day(args.date, "--date")
        orgs = [validate_organization_id(o) for o in args.org] if args.org else None
        failures: dict[str, str] = {}
        try:
            results = export_daily(
                existing("AUDIT_LAKE_ROOT", args.lake_root),
                root("AUDIT_EXPORT_ROOT", args.export_root),
                day,
                orgs,
                force=args.force,
            )
        except ExportsFailed as exc:  # the others were archived: say so, then exit 1
            results, failures = exc.results, exc.failures
        done = {"date": day.isoformat(), "files": [asdict(r) for r in results], "rows": sum(r.rows for r in results)}
        return {**done, "failed": failures} if failures else done
    if args.command == "export":
        from .exports import export_filtered
        from .filters import parse
        from .query import EventFilter

        flt = EventFilter.from_fields(
            validate_organization_id(args.org),
            parse_time(args.start, "--start"),
            parse_time(args.end, "--end"),
            parse(args.query),
            search=args.search,
            users=args.user,
            actions=args.action,
        )
        out = _out_file(args.out)
        return asdict(export_filtered(existing("AUDIT_LAKE_ROOT", args.lake_root), flt, out))
    if args.command == "retain":
        from .retention import retain

        today = _day(args.today, "--today")
        return retain(
            existing("AUDIT_LAKE_ROOT", args.lake_root),
            root("AUDIT_EXPORT_ROOT", args.export_root),
            today,
            args.days,
            force=args.force,
            dry_run=args.dry_run,
        ).as_dict()
    if args.command == "compact":
        from .maintenance import compact

        day = _optional_day(args.date, "--date")
        return compact(existing("AUDIT_LAKE_ROOT", args.lake_root), day).as_dict()
    if args.command == "vacuum":
        from .maintenance import vacuum

        return vacuum(existing("AUDIT_LAKE_ROOT", args.lake_root), args.hours)
    if args.command == "replay":
        from .replay import replay, replayable

        since = _optional_day(args.since, "--since")
        reasons, now = replayable(args.reason), _now(args.now)
        return replay(
            existing("AUDIT_LAKE_ROOT", args.lake_root),
            reasons=reasons,
            since=since,
            now=now,
            dry_run=args.dry_run,
            retention_days=args.days,
        )
    if args.command == "migrate":
        from .migrate import migrate

        return migrate(existing("AUDIT_LAKE_ROOT", args.lake_root))
    if args.command in ("signing-key", "hold", "verify"):
        return _archive_command(args)
    if args.command == "generate":
        from .generate import generate

        return generate(
            root("AUDIT_RAW_ROOT", args.raw_root),
            events=args.events,
            days=args.days,
            organizations=args.orgs,
            users_per_org=args.users_per_org,
            bad_share=args.bad_share,
            redelivery_share=args.redelivery_share,
            producers=args.producers,
            now=_now(args.now),
            seed=args.seed,
            compress=not args.no_gzip,
        ).as_dict()
    if args.command == "status":
        from .status import lake_status

        return lake_status(
            existing("AUDIT_LAKE_ROOT", args.lake_root),
            root("AUDIT_EXPORT_ROOT", args.export_root),
            root("AUDIT_RAW_ROOT", args.raw_root),
        )
    if args.command == "api-key":
        return _api_key(args, existing("AUDIT_LAKE_ROOT", args.lake_root))
    raise BadInput(f"unknown command {args.command!r}")


def _api_key(args: argparse.Namespace, lake: str) -> Any:
    """``api-key create|list|revoke``: create returns (result, the key printed once on the last line)."""
    from . import apikeys

    if args.api_key_command == "list":
        return {"keys": apikeys.list_keys(lake)}
    if args.api_key_command == "revoke":
        return apikeys.revoke_key(lake, args.key_id)
    expires = _optional_day(args.expires, "--expires")
    created = apikeys.create_key(lake, validate_organization_id(args.org), expires=expires)
    return {
        "key_id": created.key_id,
        "organization_id": created.organization_id,
        "expires_at": expires and expires.isoformat(),
    }, created.key


def _archive_command(args: argparse.Namespace) -> Any:
    """signing-key, hold and verify: the compliance archive's commands."""
    if args.command == "signing-key":
        from .signing import create_key_pair

        return create_key_pair(args.out)
    export_root = config.creatable_root("AUDIT_EXPORT_ROOT", args.export_root)
    if args.command == "hold":
        from . import holds

        if args.hold_command == "place":
            until = _optional_day(args.until, "--until")
            return holds.place(export_root, validate_organization_id(args.org), args.reason, until)
        if args.hold_command == "release":
            return holds.release(export_root, validate_organization_id(args.org))
        return {"holds": holds.list_holds(export_root)}
    from datetime import timedelta

    from .connections import open_root
    from .signing import load_public_key
    from .verify import verify

    org = validate_organization_id(args.org) if args.org is not None else None
    through = _optional_day(args.through, "--through") or datetime.now(UTC).date() - timedelta(days=1)
    key = load_public_key(args.public_key) if args.public_key is not None else None
    export_root = config.existing_root("AUDIT_EXPORT_ROOT", args.export_root)
    exports = open_root(export_root)
    if org and not exports.exists(exports.join(org)):
        raise BadInput(f"no archive for organization {org!r} under {export_root}")
    return verify(export_root, through, org, key)


def origin(exc: BaseException) -> str:
    """Where an unexpected error was raised, for the one-line message: the innermost frame, and the
    innermost frame of this package when the error came from a library (``at lib.py:12 in f, from
    include/audit/raw.py:145 in modified``)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "origin unknown"

    def short(frame: traceback.FrameSummary) -> str:
        path = frame.filename.replace(os.sep, "/")
        for marker in ("/site-packages/", "/include/audit/"):
            if marker in path:
                path = ("include/audit/" if marker == "/include/audit/" else "") + path.split(marker, 1)[1]
                break
        return f"{path}:{frame.lineno} in {frame.name}"

    ours = [f for f in frames if f"{os.sep}include{os.sep}audit{os.sep}" in f.filename]
    text = f"at {short(frames[-1])}"
    if ours and ours[-1] is not frames[-1]:
        text += f", from {short(ours[-1])}"
    return text


TEXT_FLAGS = ("--query", "--search", "--reason", "--user")
"""Flags whose value is free text, which may start with "-" (``--query "-user:bot@acme.com"``)."""


def _attach_text_values(argv: Sequence[str]) -> list[str]:
    """``--query -x`` as ``--query=-x``: argparse would take a value starting with "-" for a flag (one
    starting with "--" stays a flag: a forgotten value must not swallow the next option)."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        value = next(args, None) if arg in TEXT_FLAGS else None
        if value is not None and value.startswith("-") and not value.startswith("--"):
            out.append(f"{arg}={value}")
        else:
            out.extend([arg] if value is None else [arg, value])
    return out


def _log_to_stderr() -> None:
    """Warnings (and, with --verbose, our progress) to stderr, each stamped in UTC with a ``Z``."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_attach_text_values(sys.argv[1:] if argv is None else argv))
    _log_to_stderr()
    if args.verbose:  # our progress, not the INFO chatter of every library (Great Expectations logs ~200 lines)
        logging.getLogger(__package__).setLevel(logging.INFO)
    try:
        result = run(args)
    except BadInput as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # one line for the operator (also for a Rust panic in delta-rs: pyo3's
        # PanicException is a BaseException); the traceback only on request
        if os.environ.get("AUDIT_DEBUG"):
            raise
        from .storage import describe_error, error_line

        where = "" if describe_error(exc) else f" ({origin(exc)})"
        print(f"error: {error_line(exc)}{where}", file=sys.stderr)
        return EXIT_FAILURE
    result, secret = result if isinstance(result, tuple) else (result, None)
    print(json.dumps(result, indent=2, default=str))
    if args.command == "verify" and result["problems"]:  # one line per problem, exit 1
        print("\n".join(result["problems"]), file=sys.stderr)
        return EXIT_FAILURE
    if args.command in ("ingest", "export-daily", "retain", "compact") and result.get("failed"):  # a line each, exit 1
        print("\n".join(f"error: {org}: {error}" for org, error in result["failed"].items()), file=sys.stderr)
        return EXIT_FAILURE
    if secret is not None:  # a new API key: shown this once, on the last line
        print(secret)
    return EXIT_OK
