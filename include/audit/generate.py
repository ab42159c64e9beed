"""Realistic synthetic raw events for the demo, the tests and the benchmark: seeded, reproducible.

Writes ``raw/YYYY/MM/DD/HH/<producer>.jsonl.gz`` (by event hour) and returns what a correct
ingest must find: how many valid distinct events, re-deliveries, and bad lines of each reason.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .catalog import ACTIONS
from .storage import Root

REGIONS = ("aws-us-west-2", "aws-us-east-1", "aws-eu-west-1", "aws-ap-south-1", "aws-eu-central-1")
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "python-requests/2.32.3",
    "wherobots-cli/1.4.2 (linux; python 3.11)",
    "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22",
)
FIRST = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "yasmin",
    "zoe",
)
LAST = ("smith", "jones", "garcia", "chen", "okafor", "müller", "rossi", "tanaka", "novak", "silva")
WORDS = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "hooli",
    "soylent",
    "tyrell",
    "cyberdyne",
    "aperture",
    "vandelay",
    "wonka",
    "gringotts",
    "oceanic",
    "duff",
    "monarch",
    "nakatomi",
    "zorg",
    "vehement",
)

BAD_KINDS = (
    "malformed_json",
    "missing_field",
    "unknown_action",
    "invalid_timestamp",
    "invalid_organization_id",
    "invalid_ip",
    "invalid_email",
    "outside_retention",
    "future_timestamp",
    "conflicting_duplicate",
)


@dataclass
class Expected:
    """What the generated files hold, for asserting on an ingest."""

    valid_events: int = 0
    redeliveries: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    files: int = 0
    lines: int = 0
    per_partition: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "valid_events": self.valid_events,
            "redeliveries": self.redeliveries,
            "bad": dict(self.bad),
            "files": self.files,
            "lines": self.lines,
            "partitions": len(self.per_partition),
        }


def organization_ids(count: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]}-{i // len(WORDS) + 1:03d}" for i in range(count)]


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return "2001:db8:%x:%x::%x" % (rng.randrange(65536), rng.randrange(65536), rng.randrange(1, 65536))
    return "%d.%d.%d.%d" % (
        rng.choice((198, 203, 100, 34, 52)),
        rng.randrange(256),
        rng.randrange(256),
        rng.randrange(1, 255),
    )


def _resource(rng: random.Random, action: str, org: str) -> str:
    kind = ACTIONS[action]
    if kind == "File modifications":
        return f"s3://wbts-{org}/data/{rng.choice(('raw', 'curated', 'tmp'))}/part-{rng.randrange(10000):05d}.parquet"
    if kind == "Job Run":
        return f"job-run/{uuid.UUID(int=rng.getrandbits(128))}"
    if kind in ("Managed Catalog", "Foreign Catalog"):
        return (
            f"{org.replace('-', '_')}.{rng.choice(('sales', 'geo', 'ops'))}.{rng.choice(('roads', 'parcels', 'trips'))}"
        )
    if kind == "Credential":
        return f"api-key/{rng.getrandbits(40):010x}"
    return "" if rng.random() < 0.3 else f"{kind.lower().replace(' ', '-')}/{rng.randrange(1000)}"


def _format_time(t: datetime, rng: random.Random) -> str:
    """ISO 8601 with a random but equivalent offset, as different producers write it."""
    offset = rng.choice((0, 0, 0, 330, -300, 60, -480))
    local = t.astimezone(UTC) + timedelta(minutes=offset)
    zone = "Z" if offset == 0 else f"{'+' if offset > 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return local.replace(tzinfo=None).isoformat(timespec="microseconds") + zone


def _event(rng: random.Random, t: datetime, org: str, users: list[str]) -> dict:
    action = rng.choice(list(ACTIONS))
    event = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event_time": _format_time(t, rng),
        "organization_id": org,
        "user_email": rng.choice(users),
        "action": action,
        "resource": _resource(rng, action, org),
        "ip_address": _ip(rng),
        "user_agent": rng.choice(USER_AGENTS),
        "region": rng.choice(REGIONS),
    }
    if rng.random() < 0.1:
        event["request_id"] = f"req-{rng.getrandbits(48):012x}"
    if rng.random() < 0.02:
        event["resource"] = rng.choice(('=HYPERLINK("http://evil")', "-cmd", 'notes, "quoted"\nnext line'))
    return event


def _corrupt(kind: str, event: dict, rng: random.Random, now: datetime, retention_days: int) -> dict | str:
    bad = dict(event)
    if kind == "malformed_json":
        return json.dumps(bad)[: rng.randrange(5, 40)]
    if kind == "missing_field":
        bad[rng.choice(("event_id", "event_time", "organization_id", "user_email", "action", "ip_address"))] = (
            rng.choice((None, ""))
        )
    elif kind == "unknown_action":
        bad["action"] = rng.choice(("DeleteEverything", "createjobrun", "CreateJobRun "))
    elif kind == "invalid_timestamp":
        bad["event_time"] = rng.choice(
            ("2026-13-01T00:00:00Z", "2026-11-01 10:00:00", "yesterday", event["event_time"][:19])
        )
    elif kind == "invalid_organization_id":
        bad["organization_id"] = rng.choice(("../etc", "acme corp", "-acme", "a" * 65))
    elif kind == "invalid_ip":
        bad["ip_address"] = rng.choice(("256.1.1.1", "10.0.0", "not-an-ip", "2001:db8::g"))
    elif kind == "invalid_email":
        bad["user_email"] = rng.choice(("alice", "alice@@acme.com", "@acme.com", "alice@"))
    elif kind == "outside_retention":
        bad["event_time"] = _format_time(now - timedelta(days=retention_days + rng.randrange(1, 30)), rng)
    elif kind == "future_timestamp":
        bad["event_time"] = _format_time(now + timedelta(hours=rng.randrange(1, 48)), rng)
    return bad


def generate(
    raw_url: str,
    events: int = 10_000,
    days: int = 7,
    organizations: int = 20,
    users_per_org: int = 8,
    bad_share: float = 0.002,
    redelivery_share: float = 0.01,
    producers: int = 2,
    now: datetime | None = None,
    seed: int = 7,
    retention_days: int = 90,
    compress: bool = True,
) -> Expected:
    """Write ``events`` valid events spread over the ``days`` days before ``now``, plus bad lines.

    ``bad_share`` of each bad kind (relative to ``events``) and ``redelivery_share`` identical
    re-deliveries are mixed in; conflicting duplicates and re-deliveries go in a later file.
    """
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = now - timedelta(days=days)
    orgs = organization_ids(organizations)
    users = {o: [f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{o}.example.com" for _ in range(users_per_org)] for o in orgs}
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(orgs))]  # a few big organizations, a long tail
    span = (now - timedelta(minutes=1) - start).total_seconds()
    files: dict[str, list[str]] = defaultdict(list)
    expected = Expected()
    valid: list[dict] = []
    for _ in range(events):
        t = start + timedelta(seconds=rng.random() * span)
        org = rng.choices(orgs, weights)[0]
        event = _event(rng, t, org, users[org])
        valid.append(event)
        files[f"{t:%Y/%m/%d/%H}/producer-{rng.randrange(producers)}"].append(json.dumps(event, ensure_ascii=False))
        expected.per_partition[(t.date().isoformat(), org)] += 1
    expected.valid_events = len(valid)
    late = f"{now:%Y/%m/%d/%H}/zz-redelivery"
    for kind in BAD_KINDS:
        for _ in range(round(events * bad_share)):
            source = rng.choice(valid)
            if kind == "conflicting_duplicate":
                line = json.dumps(
                    {
                        **source,
                        "action": "DeleteUser" if source["action"] != "DeleteUser" else "InviteUser",
                        "resource": "tampered",
                    }
                )
                files[late].append(line)
            else:
                bad = _corrupt(
                    kind, {**source, "event_id": str(uuid.UUID(int=rng.getrandbits(128)))}, rng, now, retention_days
                )
                files[late if kind != "malformed_json" else f"{now:%Y/%m/%d/%H}/producer-bad"].append(
                    bad if isinstance(bad, str) else json.dumps(bad)
                )
            expected.bad[kind] += 1
    for _ in range(round(events * redelivery_share)):
        files[late].append(json.dumps(rng.choice(valid), ensure_ascii=False))
        expected.redeliveries += 1

    root = Root.open(raw_url)
    for name, lines in sorted(files.items()):
        crlf = rng.random() < 0.1
        body = (("\r\n" if crlf else "\n").join(lines) + "\n\n").encode()
        suffix = ".jsonl.gz" if compress else ".jsonl"
        root.write_bytes(root.join(name + suffix), gzip.compress(body, 1) if compress else body)
        expected.files += 1
        expected.lines += len(lines)
    return expected
