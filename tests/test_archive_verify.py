"""``verify`` catches tampering, each kind with its own code, and a chain stays linear under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pytest

from include.audit import archive as ar
from include.audit.exports import export_daily
from include.audit.holds import place
from include.audit.ingest import ingest
from include.audit.signing import create_key_pair, load_public_key, sign
from include.audit.storage import Root
from include.audit.verify import MISSING_DAYS_LISTED, csv_digest, missing_days, verify

from .helpers import event, write_lines

FIRST = date(2026, 11, 18)
DAYS = [FIRST + timedelta(days=n) for n in range(8)]
THROUGH = DAYS[-1]


def lake_of(roots: dict, now, orgs=("acme",)) -> None:
    lines = [
        event(
            event_id=f"{org}-{day}-{i}",
            event_time=f"{day}T1{i}:00:00Z",
            organization_id=org,
            resource=f'multi\nline "{i}"',
        )
        for org in orgs
        for day in DAYS
        for i in range(3)
    ]
    write_lines(Path(roots["raw"]) / "a.jsonl", lines)
    ingest(roots["raw"], roots["lake"], now=now)


@pytest.fixture
def signed_archive(roots, now, tmp_path, monkeypatch) -> dict:
    keys = create_key_pair(str(tmp_path / "keys"))
    monkeypatch.setenv("AUDIT_SIGNING_KEY", keys["private_key"])
    lake_of(roots, now)
    for day in DAYS:
        export_daily(roots["lake"], roots["exports"], day)
    summary = verify(roots["exports"], THROUGH, public_key=load_public_key(keys["public_key"]))
    assert summary["ok"], summary["problems"]
    return {**keys, "exports": Path(roots["exports"])}


def day_files(archive: dict, day: date) -> tuple[Path, Path]:
    folder = archive["exports"] / f"acme/{day:%Y/%m/%d}"
    return folder / f"audit-log_acme_{day}.csv", folder / f"audit-log_acme_{day}.manifest.json"


def problems(archive: dict, public_key: str | None = "own") -> list[str]:
    key = load_public_key(archive["public_key"] if public_key == "own" else public_key) if public_key else None
    return verify(str(archive["exports"]), THROUGH, "acme", key)["problems"]


def codes_for(lines: list[str], path: Path) -> set[str]:
    return {line.split(" ", 1)[0] for line in lines if str(path) in line}


def test_one_changed_byte_is_a_hash_mismatch(signed_archive):
    csv_path, _ = day_files(signed_archive, DAYS[3])
    body = bytearray(csv_path.read_bytes())
    body[-5] ^= 0x01
    csv_path.write_bytes(bytes(body))
    lines = problems(signed_archive)
    assert codes_for(lines, csv_path) == {"hash_mismatch"} and len(lines) == 1


def test_a_deleted_row_with_rows_edited_to_match_is_a_hash_mismatch(signed_archive):
    csv_path, manifest_path = day_files(signed_archive, DAYS[2])
    lines = csv_path.read_bytes().split(b"\n")
    csv_path.write_bytes(b"\n".join(lines[:1] + lines[3:]))  # one record spans two lines (quoted newline)
    manifest = json.loads(manifest_path.read_bytes())
    manifest["rows"] -= 1
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    found = problems(signed_archive)
    assert "hash_mismatch" in codes_for(found, csv_path)
    assert "bad_signature" in codes_for(found, manifest_path)  # the edit also breaks its signature


def test_rows_edited_alone_is_a_rows_mismatch(signed_archive):
    csv_path, manifest_path = day_files(signed_archive, DAYS[-1])  # the chain's last entry
    manifest = json.loads(manifest_path.read_bytes())
    manifest["rows"] += 1
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    assert codes_for(problems(signed_archive, None), csv_path) == {"rows_mismatch"}


def test_a_removed_day_is_a_missing_day(signed_archive):
    csv_path, manifest_path = day_files(signed_archive, DAYS[4])
    csv_path.unlink()
    manifest_path.unlink()
    found = problems(signed_archive)
    assert codes_for(found, csv_path) == {"missing_day"}


def test_a_through_years_ahead_lists_a_bounded_number_of_missing_days(signed_archive):
    """One line per missing day up to MISSING_DAYS_LISTED, then one line counting the rest exactly:
    ``--through 8999-12-31`` once listed ~2.6 million days and grew by ~11 MB/s."""
    far = date(8999, 12, 31)
    summary = verify(str(signed_archive["exports"]), far)
    assert len(summary["problems"]) == MISSING_DAYS_LISTED + 1
    listed = [line for line in summary["problems"] if "no version of this day" in line]
    assert len(listed) == MISSING_DAYS_LISTED and f"audit-log_acme_{THROUGH + timedelta(days=1)}.csv" in listed[0]
    more = (far - THROUGH).days - MISSING_DAYS_LISTED
    last_listed = THROUGH + timedelta(days=MISSING_DAYS_LISTED)
    assert summary["problems"][-1].endswith(f": {more} more days without a version after {last_listed}, through {far}")


@pytest.mark.parametrize(
    ("archived", "through", "listed", "expected"),
    [
        ([date(2026, 1, 1), date(2026, 1, 4)], date(2026, 1, 5), 10, (["01-02", "01-03", "01-05"], 0)),
        ([date(2026, 1, 1), date(2026, 1, 4)], date(2026, 1, 5), 2, (["01-02", "01-03"], 1)),
        ([date(2026, 1, 1), date(2026, 1, 9)], date(2026, 1, 3), 10, (["01-02", "01-03"], 0)),
        ([date(2026, 1, 5)], date(2026, 1, 1), 10, ([], 0)),
        ([], date(2026, 1, 1), 10, ([], 0)),
    ],
)
def test_missing_days_counts_gaps_in_order(archived, through, listed, expected):
    days, more = missing_days(archived, through, listed)
    assert ([f"{d:%m-%d}" for d in days], more) == expected


def test_a_manifest_removed_from_the_middle_of_the_chain_breaks_it(signed_archive):
    _, manifest_path = day_files(signed_archive, DAYS[3])
    manifest_path.unlink()
    found = problems(signed_archive)
    _, next_manifest = day_files(signed_archive, DAYS[4])
    assert "broken_chain" in codes_for(found, next_manifest)
    assert any(line.startswith("broken_chain ") and "sequence 4 is missing" in line for line in found)


def test_entries_edited_into_hostile_shapes_are_problems_in_bounded_work(signed_archive, monkeypatch):
    """verify reads tampered evidence: no entry can make it crash, loop over the numbers it claims,
    or hold a huge file. Once, ``"sequence": 10**18`` looped forever and ``"supersedes": [...]`` raised."""
    from include.audit import verify as verification

    monkeypatch.setattr(verification, "MAX_ENTRY_BYTES", 16 << 10)
    entries = {day: day_files(signed_archive, day)[1] for day in DAYS}

    def edit(day: date, **fields) -> Path:
        body = json.loads(entries[day].read_bytes())
        entries[day].write_text(json.dumps({**body, **fields}, indent=2, sort_keys=True) + "\n")
        return entries[day]

    far = edit(DAYS[-1], sequence=10**18)
    flag = edit(DAYS[1], sequence=True)
    odd_names = edit(DAYS[2], file=["x.csv"], supersedes={"a": 1})
    climbing = edit(DAYS[3], file="../../../../etc/passwd")
    folder = entries[DAYS[0]].parent
    (folder / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "huge.json").write_text(json.dumps({"sequence": 1, "padding": "x" * (64 << 10)}))

    found = problems(signed_archive)
    assert {line.split(" ", 1)[0] for line in found} <= set(verification.CODES)
    by_file = {path: [line for line in found if str(path) in line] for path in (far, flag, odd_names, climbing)}
    assert any("more sequences are missing before it" in line for line in by_file[far])
    assert len([line for line in found if "is missing before it" in line]) == verification.MISSING_SEQUENCES_LISTED
    assert any(line.startswith("broken_chain ") and line.endswith(": no sequence") for line in by_file[flag])
    assert codes_for(found, odd_names) >= {"missing_file"} and len(by_file[odd_names]) >= 2
    assert codes_for(found, climbing) >= {"missing_file"} and not any("passwd" in line for line in found)
    for name in ("nested.json", "huge.json"):
        assert f"broken_chain {folder / name}: not a JSON chain entry" in found


def test_a_manifest_resigned_with_another_key_is_a_bad_signature(signed_archive, tmp_path):
    other = create_key_pair(str(tmp_path / "other"))
    _, manifest_path = day_files(signed_archive, DAYS[-1])
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    forged = sign(
        json.loads(manifest_path.read_bytes()), load_pem_private_key(Path(other["private_key"]).read_bytes(), None)
    )
    manifest_path.write_text(json.dumps(forged, indent=2, sort_keys=True) + "\n")
    assert codes_for(problems(signed_archive), manifest_path) == {"bad_signature"}
    assert problems(signed_archive, other["public_key"])  # and the forger's key fails every other entry


def test_an_unsigned_manifest_when_a_key_is_required(roots, now, tmp_path, monkeypatch):
    lake_of(roots, now)
    for day in DAYS:
        export_daily(roots["lake"], roots["exports"], day)
    keys = create_key_pair(str(tmp_path / "keys"))
    archive = {**keys, "exports": Path(roots["exports"])}
    assert problems(archive, None) == []  # fine when no key is required
    found = problems(archive)
    _, manifest_path = day_files(archive, DAYS[0])
    assert codes_for(found, manifest_path) == {"unsigned"} and len(found) == len(DAYS)


def test_a_missing_csv_is_a_missing_file(signed_archive):
    csv_path, _ = day_files(signed_archive, DAYS[1])
    csv_path.unlink()
    assert codes_for(problems(signed_archive), csv_path) == {"missing_file"}


def test_row_count_streams_over_quoted_newlines_and_chunk_edges(tmp_path, monkeypatch):
    import include.audit.verify as verify_module

    body = b'h1,h2\n"a\nb",1\n"x ""q""\n",2\nplain,3\n'
    (tmp_path / "f.csv").write_bytes(body)
    monkeypatch.setattr(verify_module, "CHUNK_BYTES", 3)
    digest, size, rows = csv_digest(Root.open(str(tmp_path)), str(tmp_path / "f.csv"))
    assert (size, rows) == (len(body), 3) and digest == ar.sha256_hex(body)


# --- one chain, many writers ------------------------------------------------------------------


def export_in_child(lake: str, exports: str, day: str, key: str) -> int:
    """Run in a spawned process: archive one day (a signed manifest)."""
    import os

    os.environ["AUDIT_SIGNING_KEY"] = key
    return sum(r.version for r in export_daily(lake, exports, date.fromisoformat(day), ["acme"]))


def assert_linear(exports: str, public_key: str) -> list[dict]:
    root = Root.open(exports)
    entries = [ar.read_entry(root, p) for p in ar.list_org(root, "acme") if p.endswith(".json")]
    assert sorted(e["sequence"] for e in entries) == list(range(1, len(entries) + 1))
    summary = verify(exports, THROUGH, "acme", load_public_key(public_key))
    assert summary["ok"], summary["problems"]
    return entries


def test_concurrent_exports_of_one_organization_keep_one_linear_chain(roots, now, tmp_path, monkeypatch):
    keys = create_key_pair(str(tmp_path / "keys"))
    monkeypatch.setenv("AUDIT_SIGNING_KEY", keys["private_key"])
    lake_of(roots, now)
    # threads: every day twice at once, and holds placed meanwhile
    jobs = [*DAYS[:4], *DAYS[:4]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(export_daily, roots["lake"], roots["exports"], d, ["acme"]) for d in jobs]
        futures += [pool.submit(place, roots["exports"], "acme", f"case {n}") for n in range(3)]
        [f.result() for f in futures]
    # processes (spawned: no forked locks or runtimes): the other days, each twice, then late events
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.starmap(
            export_in_child,
            [(roots["lake"], roots["exports"], d.isoformat(), keys["private_key"]) for d in [*DAYS[4:], *DAYS[4:]]],
        )
        write_lines(
            Path(roots["raw"]) / "late.jsonl",
            [event(event_id=f"late-{d}", event_time=f"{d}T23:00:00Z") for d in DAYS[:6]],
        )
        ingest(roots["raw"], roots["lake"], now=now)
        versions = pool.starmap(
            export_in_child,
            [(roots["lake"], roots["exports"], d.isoformat(), keys["private_key"]) for d in [*DAYS[:6], *DAYS[:6]]],
        )
    assert set(versions) == {2}  # each amended day once, whoever won
    entries = assert_linear(roots["exports"], keys["public_key"])
    exports = [e for e in entries if e["kind"] == "export"]
    assert len(exports) == len(DAYS) + 6 and sum(e["kind"] == "hold" for e in entries) == 3
    assert len({(e["date"], e["version"]) for e in exports}) == len(exports)
