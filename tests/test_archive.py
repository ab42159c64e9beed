"""The compliance archive end to end through the CLI, on local disk and on SeaweedFS (issue 9):
heartbeats, late events as version 2, reruns that write nothing, purge receipts, legal holds, and
``verify`` passing with and without signatures; plus: nothing under the exports root is written twice."""

from __future__ import annotations

import json
import stat
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from include.audit import archive as ar
from include.audit.storage import Root

from .fault_proxy import run_in_process
from .helpers import event, write_lines
from .storage_checks import listing, run_cli

NOW_ARG = "2026-11-26T12:00:00Z"
DAYS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]


def raw_events() -> list[dict]:
    """acme: three events every day; quiet: one event on the first day, then nothing (heartbeats)."""
    lines = [event(event_id=f"acme-{day}-{i}", event_time=f"{day}T1{i}:00:00Z") for day in DAYS for i in range(3)]
    return lines + [event(event_id="quiet-1", event_time=f"{DAYS[0]}T08:00:00Z", organization_id="quiet")]


def put_raw(raw: str, name: str, lines: list[dict], tmp_path: Path) -> None:
    local = write_lines(tmp_path / "staging" / name, lines)
    root = Root.open(raw)
    root.write_bytes(root.join(name), local.read_bytes())


def cli(capsys, *argv: str) -> dict:
    code, result, err = run_cli(capsys, *argv)
    assert code == 0, err
    return result


def run_scenario(capsys, tmp_path: Path, raw: str, lake: str, exports: str, public_key: str | None) -> None:
    """The whole story, asserting each step."""
    put_raw(raw, "a.jsonl", raw_events(), tmp_path)
    cli(capsys, "ingest", "--raw-root", raw, "--lake-root", lake, "--now", NOW_ARG)
    for day in DAYS:
        cli(capsys, "export-daily", "--lake-root", lake, "--export-root", exports, "--date", day)
    root = Root.open(exports)
    quiet = ar.latest_manifest_paths(ar.list_org(root, "quiet"), "quiet")
    assert [d.isoformat() for d in quiet] == DAYS  # a version every day, events or not
    heartbeat = ar.read_entry(root, quiet[max(quiet)])
    assert heartbeat["rows"] == 0 and heartbeat["first_event_time"] is None and heartbeat["kind"] == "export"
    assert root.read_bytes(root.join(root.path, "quiet/2026/11/25", heartbeat["file"])).count(b"\n") == 1

    # late events: version 2 of 2026-11-22 holds the whole day; version 1 stays byte for byte
    v1 = root.join("acme/2026/11/22/audit-log_acme_2026-11-22.csv")
    v1_bytes, v1_manifest = root.read_bytes(v1), root.read_bytes(v1.replace(".csv", ".manifest.json"))
    put_raw(raw, "late.jsonl", [event(event_id="late-1", event_time="2026-11-22T23:59:00Z")], tmp_path)
    cli(capsys, "ingest", "--raw-root", raw, "--lake-root", lake, "--now", NOW_ARG)
    status = cli(capsys, "status", "--lake-root", lake, "--export-root", exports)
    assert status["archive"]["acme"]["stale_days"] == ["2026-11-22"]
    (amended,) = cli(
        capsys, "export-daily", "--lake-root", lake, "--export-root", exports, "--date", "2026-11-22", "--org", "acme"
    )["files"]
    assert amended["version"] == 2 and amended["rows"] == 4 and amended["path"].endswith("2026-11-22.v2.csv")
    manifest = json.loads(root.read_bytes(amended["manifest"]))
    assert manifest["supersedes"] == "audit-log_acme_2026-11-22.csv" and manifest["version"] == 2
    assert root.read_bytes(v1) == v1_bytes
    assert root.read_bytes(v1.replace(".csv", ".manifest.json")) == v1_manifest
    health = cli(capsys, "status", "--lake-root", lake, "--export-root", exports)["archive"]
    assert health["acme"]["latest_amended_day"] == "2026-11-22" and health["acme"]["stale_days"] == []
    assert health["quiet"]["days_archived"] == len(DAYS) and "exports" not in health

    # a rerun of everything writes nothing
    before = listing(exports)
    for day in DAYS:
        files = cli(capsys, "export-daily", "--lake-root", lake, "--export-root", exports, "--date", day)["files"]
        assert all(f["skipped"] for f in files)
    assert listing(exports) == before

    # a hold on acme blocks retention even with --force; quiet's expired partitions go, with a receipt
    cli(capsys, "hold", "place", "--export-root", exports, "--org", "acme", "--reason", "litigation 2026-17")
    assert [h["organization_id"] for h in cli(capsys, "hold", "list", "--export-root", exports)["holds"]] == ["acme"]
    retained = cli(
        capsys,
        "retain",
        "--lake-root",
        lake,
        "--export-root",
        exports,
        "--today",
        "2026-11-26",
        "--days",
        "4",
        "--force",
    )
    assert retained["dropped"] == ["2026-11-20/quiet"]
    assert set(retained["held"]) == {"2026-11-20/acme", "2026-11-21/acme"}
    assert all("litigation 2026-17" in why for why in retained["held"].values())
    (receipt_path,) = retained["receipts"]
    assert "/quiet/_receipts/2026-11-26_" in receipt_path
    receipt = json.loads(root.read_bytes(receipt_path))
    first_manifest = root.read_bytes(quiet[min(quiet)])
    assert receipt["kind"] == "purge" and receipt["forced"] is True
    assert receipt["dropped"] == [{"date": "2026-11-20", "rows": 1, "manifest_sha256": ar.sha256_hex(first_manifest)}]

    # released: a dry run says would_drop and writes nothing; the real run drops and writes a receipt
    cli(capsys, "hold", "release", "--export-root", exports, "--org", "acme")
    before = listing(exports)
    dry = cli(
        capsys,
        "retain",
        "--lake-root",
        lake,
        "--export-root",
        exports,
        "--today",
        "2026-11-26",
        "--days",
        "4",
        "--dry-run",
    )
    assert dry["would_drop"] == ["2026-11-20/acme", "2026-11-21/acme"] and "dropped" not in dry
    assert listing(exports) == before
    done = cli(capsys, "retain", "--lake-root", lake, "--export-root", exports, "--today", "2026-11-26", "--days", "4")
    assert done["dropped"] == dry["would_drop"] and len(done["receipts"]) == 1
    acme_receipt = json.loads(root.read_bytes(done["receipts"][0]))
    assert [d["date"] for d in acme_receipt["dropped"]] == ["2026-11-20", "2026-11-21"]
    assert acme_receipt["forced"] is False and all(d["rows"] == 3 for d in acme_receipt["dropped"])

    kinds = Counter(ar.read_entry(root, p)["kind"] for p in ar.list_org(root, "acme") if p.endswith(".json"))
    assert kinds == {"export": len(DAYS) + 1, "hold": 1, "release": 1, "purge": 1}
    args = ["verify", "--export-root", exports, "--through", "2026-11-25"]
    summary = cli(capsys, *args, *(["--public-key", public_key] if public_key else []))
    assert summary["ok"] and summary["problems"] == [] and summary["signatures"] == bool(public_key)
    assert summary["organizations"]["acme"] == {"entries": 10, "days": 6, "versions": 7, "problems": 0, "ok": True}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "roots") if request.param == "local" else request.getfixturevalue("s3_prefix")


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_archive_scenario(base: str, signed: bool, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public_key = None
    if signed:
        keys = cli(capsys, "signing-key", "create", "--out", str(tmp_path / "keys"))
        monkeypatch.setenv("AUDIT_SIGNING_KEY", keys["private_key"])
        public_key = keys["public_key"]
    run_scenario(capsys, tmp_path, f"{base}/raw", f"{base}/lake", f"{base}/exports", public_key)
    if signed:  # a signed archive fails verification against the wrong key, and says why
        other = cli(capsys, "signing-key", "create", "--out", str(tmp_path / "other"))
        code, _, err = run_cli(
            capsys,
            "verify",
            "--export-root",
            f"{base}/exports",
            "--through",
            "2026-11-25",
            "--public-key",
            other["public_key"],
        )
        assert code == 1 and "bad_signature" in err
    else:  # an unsigned archive fails when a key is required
        keys = cli(capsys, "signing-key", "create", "--out", str(tmp_path / "keys"))
        code, _, err = run_cli(
            capsys,
            "verify",
            "--export-root",
            f"{base}/exports",
            "--through",
            "2026-11-25",
            "--public-key",
            keys["public_key"],
        )
        assert code == 1 and "unsigned" in err


def test_signing_key_create_writes_a_private_pem_only_its_owner_reads(capsys, tmp_path: Path) -> None:
    code, result, err = run_cli(capsys, "signing-key", "create", "--out", str(tmp_path / "k"))
    assert code == 0, err
    private = Path(result["private_key"])
    assert private.name == "audit-signing.key" and Path(result["public_key"]).name == "audit-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE" not in json.dumps(result) and private.read_text() not in json.dumps(result)
    code, _, err = run_cli(capsys, "signing-key", "create", "--out", str(tmp_path / "k"))  # never replaced
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "--export-root", "/nonexistent/exports"], "does not exist"),
        (["verify", "--export-root", "{exports}", "--through", "yesterday"], "--through"),
        (["verify", "--export-root", "{exports}", "--org", "../etc"], "invalid organization id"),
        (["verify", "--export-root", "{exports}", "--org", "nobody"], "no archive"),
        (["verify", "--export-root", "{exports}", "--public-key", "/nonexistent.pub"], "public key"),
        (["hold", "place", "--export-root", "{exports}", "--org", "acme", "--reason", " "], "--reason"),
        (
            ["hold", "place", "--export-root", "{exports}", "--org", "acme", "--reason", "x", "--until", "soon"],
            "--until",
        ),
        (["hold", "release", "--export-root", "{exports}", "--org", "acme"], "no legal hold"),
        (
            ["hold", "place", "--export-root", "{exports}", "--org", "acme", "--reason", "x", "--until", "2020-01-01"],
            "is past",
        ),
    ],
)
def test_bad_archive_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "acme").mkdir(parents=True)
    code, _, err = run_cli(capsys, *[a.format(exports=exports) for a in argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.s3
def test_nothing_under_the_exports_root_is_written_twice(
    s3_server, s3_prefix: str, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request goes through a counting proxy: no key below the exports root gets two successful PUTs,
    and none is deleted, over the whole scenario (exports, versions, reruns, holds, receipts)."""
    record = tmp_path / "requests.json"
    proxy, url = run_in_process(s3_server.ports["s3.port"], record)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        run_scenario(capsys, tmp_path, f"{s3_prefix}/raw", f"{s3_prefix}/lake", f"{s3_prefix}/exports", None)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    responses = json.loads(record.read_text())
    exports_key = "/" + s3_prefix.removeprefix("s3://") + "/exports/"
    writes = Counter(
        urlsplit(target).path
        for method, target, status in responses
        if method == "PUT" and 200 <= status < 300 and urlsplit(target).path.startswith(exports_key)
    )
    assert writes and max(writes.values()) == 1, writes.most_common(3)
    assert not [t for m, t, s in responses if m in ("DELETE", "POST") and exports_key in t]


def test_a_new_hold_may_extend_one_in_force_but_never_end_it_sooner(capsys, tmp_path: Path) -> None:
    exports = str(tmp_path / "exports")
    place = ["hold", "place", "--export-root", exports, "--org", "acme", "--reason"]
    assert run_cli(capsys, *place, "case 1", "--until", "8000-01-01")[0] == 0
    assert run_cli(capsys, *place, "case 2", "--until", "8500-01-01")[0] == 0  # later: extends
    code, _, err = run_cli(capsys, *place, "typo", "--until", "8100-01-01")
    assert code == 2 and "already held until 8500-01-01" in err and len(err.strip().splitlines()) == 1
    assert run_cli(capsys, *place, "case 3")[0] == 0  # open-ended: extends
    code, _, err = run_cli(capsys, *place, "typo", "--until", "8900-01-01")
    assert code == 2 and "already held until released" in err
    (held,) = cli(capsys, "hold", "list", "--export-root", exports)["holds"]
    assert held["reason"] == "case 3" and held["until"] is None


def test_a_chain_claim_whose_answer_was_lost_is_known_by_its_bytes(tmp_path: Path, monkeypatch) -> None:
    """A claim created on storage whose answer never came back (the client saw a failure, or its
    retry met the object already there) is this writer's: it is not claimed again under the next
    sequence, which would point two claims at one entry and break the chain."""
    exports = Root.open(str(tmp_path / "exports"))
    create = Root.create_if_absent
    lost: list[str] = []

    def answer_lost(self: Root, path: str, data: bytes) -> str | None:
        made = create(self, path, data)
        if path.endswith(ar.CLAIM_SUFFIX) and not lost:
            lost.append(path)
            return None  # it was made, but its answer is "already there"
        return made

    monkeypatch.setattr(Root, "create_if_absent", answer_lost)
    first = ar.append(exports, "acme", exports.join("acme", "_receipts", "a.json"), {"kind": "receipt"})
    second = ar.append(exports, "acme", exports.join("acme", "_receipts", "b.json"), {"kind": "receipt"})
    assert lost and (first["sequence"], second["sequence"]) == (1, 2)
    claims = sorted(p.name for p in (tmp_path / "exports" / "acme" / ar.CHAIN).iterdir())
    assert claims == [f"{n:010d}{ar.CLAIM_SUFFIX}" for n in (1, 2)]
    stored = [json.loads((tmp_path / "exports" / "acme" / "_receipts" / n).read_text()) for n in ("a.json", "b.json")]
    assert stored == [first, second]
    assert second["previous_sha256"] == ar.sha256_hex(
        (tmp_path / "exports" / "acme" / "_receipts" / "a.json").read_bytes()
    )
    with pytest.raises(FileExistsError):  # a path is an entry once
        ar.append(exports, "acme", exports.join("acme", "_receipts", "a.json"), {"kind": "receipt"})


def test_an_entry_over_the_size_bound_is_refused_without_being_read_whole(tmp_path):
    """The pipeline reads entries (holds, manifests) as the archive stores them; a file over
    MAX_ENTRY_BYTES is no entry, and only MAX_ENTRY_BYTES + 1 of it is read."""
    exports = Root.open(str(tmp_path))
    (tmp_path / "small.json").write_text('{"sequence": 1}')
    (tmp_path / "huge.json").write_text('{"pad": "' + "x" * (ar.MAX_ENTRY_BYTES + 10) + '"}')
    assert ar.read_entry(exports, str(tmp_path / "small.json")) == {"sequence": 1}
    assert len(exports.read_bytes(str(tmp_path / "huge.json"), limit=100)) == 100
    with pytest.raises(ValueError, match="not a chain entry"):
        ar.read_entry(exports, str(tmp_path / "huge.json"))
