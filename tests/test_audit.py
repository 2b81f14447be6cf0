"""The audit log: chain integrity, every kind of tampering, crashes, threads, queries,
AuditEvent export and the node key."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import healthmesh.audit as audit
from healthmesh.audit import (
    AuditError,
    AuditLog,
    AuditLogCorrupt,
    AuditRecord,
    Checkpoint,
    InvalidAuditRecord,
    entry_hash,
    export_folder,
    load_or_create_node_key,
    public_key_id,
    to_audit_event,
    verify_folder,
)
from healthmesh.audit.checkpoints import sign_checkpoint
from healthmesh.audit.schema import checkpoint_row
from healthmesh.errors import ConfigError
from healthmesh.fhir.validation import validate

EVERY = 10
COUNT = 35  # checkpoints at 10, 20, 30 and (on close) 35


def record(i: int, **fields: object) -> AuditRecord:
    """A varied record: three actors, five patients, reads and searches."""
    values: dict[str, object] = dict(
        time=1_700_000_000_000_000 + i * 1_000_000,
        actor=("Practitioner/7", "Organization/uni-research", "system")[i % 3],
        organisation="uni-research" if i % 3 == 1 else None,
        purpose=("TREAT", "HRESCH", None)[i % 3],
        action=("read", "search")[i % 2],
        resource_types=("Observation",),
        resources=(f"Observation/o{i}",),
        patients=(f"p{i % 5}",),
        decision=("permit", "deny")[i % 4 == 3],
        rule=f"Consent/c{i % 5}#provision[0]",
        request_id=f"req-{i}",
        outcome=403 if i % 4 == 3 else 200,
    )
    values.update(fields)
    return AuditRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A node folder with a closed log of COUNT entries."""
    with AuditLog(tmp_path, checkpoint_every=EVERY) as log:
        for i in range(1, COUNT + 1):
            assert log.append(record(i)) == i
    return tmp_path


def open_db(folder: Path) -> sqlite3.Connection:
    """The raw audit file, as an attacker with file access sees it (triggers dropped)."""
    db = sqlite3.connect(folder / audit.AUDIT_FILE, isolation_level=None)
    for table in ("entries", "entry_patients", "checkpoints"):
        db.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        db.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    return db


def verify(folder: Path) -> audit.VerifyResult:
    with AuditLog(folder, readonly=True) as log:
        return log.verify()


def row(db: sqlite3.Connection, seq: int) -> tuple[bytes, bytes, bytes]:
    rec, prev, hash_ = db.execute(
        "SELECT record, prev_hash, hash FROM entries WHERE seq=?", (seq,)).fetchone()
    return bytes(rec), bytes(prev), bytes(hash_)


def shift_up(db: sqlite3.Connection, start: int) -> None:
    for seq in range(COUNT, start - 1, -1):
        db.execute("UPDATE entries SET seq = seq + 1 WHERE seq = ?", (seq,))
        db.execute("UPDATE entry_patients SET seq = seq + 1 WHERE seq = ?", (seq,))


def shift_down(db: sqlite3.Connection, start: int) -> None:
    for seq in range(start, COUNT + 1):
        db.execute("UPDATE entries SET seq = seq - 1 WHERE seq = ?", (seq,))
        db.execute("UPDATE entry_patients SET seq = seq - 1 WHERE seq = ?", (seq,))


def rechain(db: sqlite3.Connection, start: int) -> None:
    """Recompute hashes from ``start`` on, as an attacker without the key would."""
    prev = row(db, start - 1)[2] if start > 1 else audit.ZERO_HASH
    for seq, rec in db.execute("SELECT seq, record FROM entries WHERE seq >= ? ORDER BY seq",
                               (start,)).fetchall():
        new = entry_hash(prev, seq, bytes(rec))
        db.execute("UPDATE entries SET prev_hash=?, hash=? WHERE seq=?", (prev, new, seq))
        prev = new


# -- the chain --------------------------------------------------------------------------


def test_chain_is_valid_after_appends(folder: Path) -> None:
    result = verify(folder)
    assert result.ok and result.first_bad is None and result.reason is None
    assert (result.checked, result.head, result.checkpoints, result.unsigned) == (35, 35, 4, 0)
    db = open_db(folder)
    prev = audit.ZERO_HASH
    for seq in range(1, COUNT + 1):
        rec, stored_prev, stored = row(db, seq)
        assert stored_prev == prev and stored == entry_hash(prev, seq, rec)
        assert rec == AuditRecord.from_json(rec).canonical() == record(seq).canonical()
        prev = stored
    assert [c.position for c in AuditLog(folder, readonly=True).checkpoints()] == [10, 20, 30, 35]


def test_append_many_is_one_chain(tmp_path: Path) -> None:
    with AuditLog(tmp_path, checkpoint_every=EVERY) as log:
        assert log.append_many([record(i) for i in range(1, 26)]) == list(range(1, 26))
        assert log.append_many([]) == []
        assert log.append(record(26)) == 26
        assert [c.position for c in log.checkpoints()] == [10, 20]
        assert log.verify().ok
        assert log.entries(limit=1)[0].hash == log.checkpoint().hash.hex()  # type: ignore[union-attr]


def test_entry_hash_is_documented_formula() -> None:
    import hashlib

    rec = record(1).canonical()
    assert entry_hash(bytes(32), 1, rec) == hashlib.sha256(
        bytes(32) + (1).to_bytes(8, "big") + rec).digest()


# -- tampering: each kind is found at its first position -----------------------------


def edit_byte(db: sqlite3.Connection) -> None:
    rec = bytearray(row(db, 15)[0])
    rec[rec.index(b"req-15") + 4] = ord("9")
    db.execute("UPDATE entries SET record=? WHERE seq=15", (bytes(rec),))


def edit_and_rehash(db: sqlite3.Connection) -> None:
    rec, prev, _ = row(db, 15)
    forged = rec.replace(b'"request_id":"req-15"', b'"request_id":"req-99"')
    assert forged != rec
    db.execute("UPDATE entries SET record=?, hash=? WHERE seq=15",
               (forged, entry_hash(prev, 15, forged)))


def insert(db: sqlite3.Connection) -> None:
    shift_up(db, 15)
    prev = row(db, 14)[2]
    forged = record(99)
    data = forged.canonical()
    db.execute("INSERT INTO entries VALUES (15, ?, ?, ?, ?, ?, ?)",
               (forged.time, forged.actor, forged.action, data, prev, entry_hash(prev, 15, data)))
    db.execute("INSERT INTO entry_patients VALUES ('p4', 15)")


def swap_rows(db: sqlite3.Connection) -> None:
    db.execute("UPDATE entries SET seq = -1 WHERE seq = 15")
    db.execute("UPDATE entries SET seq = 15 WHERE seq = 16")
    db.execute("UPDATE entries SET seq = 16 WHERE seq = -1")
    db.execute("UPDATE entry_patients SET seq = 31 - seq WHERE seq IN (15, 16)")


def swap_records(db: sqlite3.Connection) -> None:
    a, b = row(db, 15)[0], row(db, 16)[0]
    db.execute("UPDATE entries SET record=? WHERE seq=15", (b,))
    db.execute("UPDATE entries SET record=? WHERE seq=16", (a,))


def delete_and_renumber(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM entries WHERE seq=15")
    db.execute("DELETE FROM entry_patients WHERE seq=15")
    shift_down(db, 16)


def rewrite_without_key(db: sqlite3.Connection) -> None:
    rec = row(db, 15)[0].replace(b'"request_id":"req-15"', b'"request_id":"req-99"')
    db.execute("UPDATE entries SET record=? WHERE seq=15", (rec,))
    rechain(db, 15)


TAMPERING: dict[str, tuple[Callable[[sqlite3.Connection], object], int, str]] = {
    "edited record byte": (edit_byte, 15, "record edited"),
    "record as text via SQL replace": (
        lambda db: db.execute("UPDATE entries SET record=replace(record, 'req', 'REQ') "
                              "WHERE seq=15"), 15, "record edited"),
    "forged hash column": (
        lambda db: db.execute("UPDATE entries SET hash=randomblob(32) WHERE seq=15"), 15,
        "hash forged"),
    "forged prev_hash column": (
        lambda db: db.execute("UPDATE entries SET prev_hash=randomblob(32) WHERE seq=15"), 15,
        "does not link"),
    "edited record, hash recomputed": (edit_and_rehash, 15, "altered"),
    "deleted record": (lambda db: db.execute("DELETE FROM entries WHERE seq=15"), 15,
                       "missing"),
    "deleted record, positions renumbered": (delete_and_renumber, 15, "entry 15"),
    "inserted record": (insert, 15, "inserted"),
    "reordered rows": (swap_rows, 15, "entry 15"),
    "reordered records": (swap_records, 15, "record edited"),
    "edited actor column": (
        lambda db: db.execute("UPDATE entries SET actor='system' WHERE seq=16"), 16,
        "index columns"),
    "removed patient index row": (
        lambda db: db.execute("DELETE FROM entry_patients WHERE seq=17"), 17, "patient index"),
    "added patient index row": (
        lambda db: db.execute("INSERT INTO entry_patients VALUES ('zz', 18)"), 18,
        "patient index"),
    "edited checkpoint": (
        lambda db: db.execute("UPDATE checkpoints SET time=time+1 WHERE number=2"), 20,
        "signature"),
    "edited checkpoint hash": (
        lambda db: db.execute("UPDATE checkpoints SET hash=randomblob(32) WHERE number=2"), 20,
        "signature"),
    "removed checkpoint": (
        lambda db: db.execute("DELETE FROM checkpoints WHERE number=2"), 20, "removed"),
    "removed last checkpoints": (
        lambda db: db.execute("DELETE FROM checkpoints WHERE number>=3"), 30, "removed"),
    "truncated tail below last checkpoint": (
        lambda db: db.execute("DELETE FROM entries WHERE seq > 25"), 26, "removed"),
    "chain rewritten without the key": (rewrite_without_key, 11, "do not match the signed"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_found_at_first_bad_position(folder: Path, kind: str) -> None:
    tamper, first_bad, reason = TAMPERING[kind]
    tamper(open_db(folder))
    result = verify(folder)
    assert not result.ok
    assert result.first_bad == first_bad, result
    assert reason in (result.reason or ""), result


def test_tail_tampering_blocks_a_writer(folder: Path) -> None:
    open_db(folder).execute("UPDATE entries SET hash=randomblob(32) WHERE seq=35")
    with pytest.raises(AuditLogCorrupt) as caught:
        AuditLog(folder, checkpoint_every=EVERY)
    assert caught.value.result.first_bad == 35
    assert not verify_folder(folder).ok


def forge_with(db: sqlite3.Connection, key: Ed25519PrivateKey, log_id: str) -> None:
    """Rewrite entry 15, rechain, and re-sign every checkpoint with ``key``."""
    rewrite_without_key(db)
    rows = db.execute("SELECT number, seq, prev_seq, every, time FROM checkpoints").fetchall()
    db.execute("DELETE FROM checkpoints")
    for number, seq, prev_seq, every, signed_at in rows:
        cp = sign_checkpoint(key, log_id, number, seq, row(db, seq)[2], prev_seq, every,
                             signed_at)
        db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)", checkpoint_row(cp))


def test_resigned_with_another_key_fails_against_node_key(folder: Path) -> None:
    node_key = load_or_create_node_key(folder)
    log = AuditLog(folder, readonly=True)
    attacker = Ed25519PrivateKey.generate()
    db = open_db(folder)
    forge_with(db, attacker, log.log_id)
    db.execute("UPDATE meta SET value=? WHERE key='public_key'",
               (audit.public_key_pem(attacker.public_key()),))
    result = log.verify(node_key.public_key())
    assert not result.ok and result.first_bad == 10
    assert f"names key {public_key_id(attacker.public_key())}" in (result.reason or "")
    assert not verify_folder(folder).ok  # the CLI trusts the key in DIR/keys, not the file
    assert log.verify(attacker.public_key()).ok  # which is why the key must come from outside
    log.close()


def test_external_anchor_catches_a_rewrite_with_the_node_key(folder: Path) -> None:
    log = AuditLog(folder, readonly=True)
    anchor = Checkpoint.from_dict(orjson.loads(orjson.dumps(log.checkpoints()[1].to_dict())))
    forge_with(open_db(folder), load_or_create_node_key(folder), log.log_id)
    assert log.verify().ok  # a key holder can rewrite history ...
    result = log.verify(anchors=[anchor])
    assert not result.ok and result.first_bad == 11  # ... unless a checkpoint was kept outside
    open_db(folder).execute("DELETE FROM entries WHERE seq > 12")
    assert log.verify(anchors=[anchor]).first_bad == 13  # rollback below the anchor
    with pytest.raises(AuditError):
        forged = sign_checkpoint(Ed25519PrivateKey.generate(), log.log_id, 2, 20, b"x" * 32,
                                 10, 10, 0)
        log.verify(anchors=[forged])
    log.close()


# -- crashes, threads, reopening ----------------------------------------------------------

CRASH_SCRIPT = """
import sys
from pathlib import Path
from healthmesh.audit import AuditLog, AuditRecord
log = AuditLog(Path(sys.argv[1]), checkpoint_every=7)
batch = sys.argv[2] == "many"
i = 0
while True:
    i += 1
    r = AuditRecord(actor="system", action="read", patients=(f"p{i % 3}",),
                    request_id=f"crash-{i}")
    log.append_many([r] * 5) if batch else log.append(r)
    if i == 20:
        print("running", flush=True)
"""


@pytest.mark.parametrize("mode", ["one", "many"])
def test_sigkill_during_appends_leaves_a_valid_chain(tmp_path: Path, mode: str) -> None:
    for round_ in range(3):
        with subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), mode],
                              stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == "running\n"
            time.sleep(0.02 * round_)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with AuditLog(tmp_path, checkpoint_every=7) as log:  # recovers: verifies the tail
            head = log.head()
            assert head >= 20
            assert log.append(record(1)) == head + 1
            assert log.verify().ok
    result = verify_folder(tmp_path)
    assert result.ok and result.unsigned == 0, result


def test_concurrent_appends_get_consecutive_positions(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, checkpoint_every=25)
    got: dict[int, AuditRecord] = {}
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(100):
            rec = record(i, request_id=f"w{worker}-{i}")
            positions = [log.append(rec)] if i % 2 else log.append_many([rec, rec])
            with lock:
                got.update(dict.fromkeys(positions, rec))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 601))
    for entry in log.entries(limit=600):
        assert entry.record == got[entry.position]
    assert log.verify().ok
    log.close()


def test_reopen_with_another_interval(folder: Path) -> None:
    with AuditLog(folder, checkpoint_every=4) as log:
        log.append_many([record(i) for i in range(9)])
    with AuditLog(folder, checkpoint_every=50) as log:
        log.append_many([record(i) for i in range(30)])
        assert log.verify().ok
    assert verify(folder).ok


def test_open_modes_and_keys(folder: Path, tmp_path: Path) -> None:
    with AuditLog(folder, readonly=True) as log, pytest.raises(AuditError, match="read-only"):
        log.append(record(1))
    with pytest.raises(AuditError, match="key rotation"):
        AuditLog(folder, signing_key=Ed25519PrivateKey.generate())
    with pytest.raises(AuditError, match="no audit log"):
        AuditLog(tmp_path / "empty", readonly=True)
    db = sqlite3.connect(folder / audit.AUDIT_FILE, isolation_level=None)
    for statement in ("DELETE FROM entries", "UPDATE checkpoints SET time = 0"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(statement)
    db.close()
    log = AuditLog(folder)
    log.close()
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(record(1))


# -- queries ----------------------------------------------------------------------------


def test_queries(folder: Path) -> None:
    with AuditLog(folder, readonly=True) as log:
        assert [e.position for e in log.entries(patient="p2")] == [32, 27, 22, 17, 12, 7, 2]
        assert [e.position for e in log.entries(patient="Patient/p2", limit=2, offset=1)] == [
            27, 22]
        by_actor = log.entries(actor="Practitioner/7", newest_first=False)
        assert [e.position for e in by_actor][:3] == [3, 6, 9]
        start = record(10).time
        window = log.entries(since=start, until=start + 3_000_000, newest_first=False)
        assert [e.position for e in window] == [10, 11, 12]
        searches = log.entries(action="search", patient="p3")
        assert [e.position for e in searches] == [33, 23, 13, 3]
        assert len(log.entries(limit=1000)) == COUNT and log.head() == COUNT
        assert [e.position for e in log.scan(after=30, batch=2)] == [31, 32, 33, 34, 35]
        with pytest.raises(AuditError):
            log.entries(limit=-1)


# -- records ----------------------------------------------------------------------------


def test_record_validation_and_canonical_json() -> None:
    rec = record(1, patients=["Patient/p1", "p2"], detail={"b": 1, "a": {"d": 2, "c": 3}})
    assert rec.patients == ("p1", "p2") and isinstance(rec.resources, tuple)
    data = rec.canonical()
    assert data == orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
    assert b'"detail":{"a":{"c":3,"d":2},"b":1}' in data
    assert AuditRecord.from_json(data) == rec
    assert AuditRecord(actor="system", action="admin").time > 1_700_000_000_000_000
    bad: list[dict[str, object]] = [
        {"action": "Read"}, {"decision": "maybe"}, {"resources": ("nope",)},
        {"patients": "p1"}, {"outcome": True}, {"outcome": 99}, {"time": -1},
        {"actor": "has space"}, {"purpose": ""}, {"detail": {"x": "y" * 5000}},
        {"detail": {"x": object()}},
    ]
    for fields in bad:
        with pytest.raises(InvalidAuditRecord):
            record(1, **fields)
    with pytest.raises(InvalidAuditRecord):
        AuditRecord.from_json(b'{"actor": "system", "action": "read", "extra": 1}')


# -- FHIR export ------------------------------------------------------------------------


def test_audit_events_validate(folder: Path) -> None:
    with AuditLog(folder) as log:
        log.append(record(40, action="export", patients=(), resources=(), detail={"n": 3}))
        log.append(record(41, action="admin", actor="Client/tool", outcome="failure",
                          organisation="Other Org"))
        for action in sorted(audit.ACTIONS):
            log.append(record(42, action=action, resource_types=("Condition", "Observation")))
        entries = log.entries(limit=1000)
    for entry in entries:
        event = to_audit_event(entry, node_name="Clinic A", log_id="x")
        assert validate(event) == [], (entry, validate(event))
        assert event["source"]["observer"]["display"] == "Clinic A"
        chain = {e["url"]: e for e in event["extension"][0]["extension"]}
        assert chain["position"]["valueInteger"] == entry.position
        assert chain["hash"]["valueString"] == entry.hash
    read = to_audit_event(next(e for e in entries if e.position == 4))
    assert (read["action"], read["outcome"], read["recorded"]) == (
        "R", "0", "2023-11-14T22:13:24.000000Z")
    assert read["agent"][0] == {"who": {"reference": "Organization/uni-research"},
                                "requestor": True}
    assert read["purposeOfEvent"][0]["coding"][0]["code"] == "HRESCH"
    assert {e["what"]["reference"] for e in read["entity"]} == {"Patient/p4", "Observation/o4"}
    denied = to_audit_event(next(e for e in entries if e.position == 3))
    assert (denied["action"], denied["outcome"]) == ("E", "4")


def test_export_folder(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.ndjson"
    assert export_folder(folder, out, None) == COUNT
    lines = out.read_bytes().splitlines()
    assert len(lines) == COUNT and all(validate(orjson.loads(line)) == [] for line in lines)
    assert export_folder(folder, out, record(30).time) == 6
    assert verify_folder(folder).ok


# -- keys and the public API ----------------------------------------------------------------


def test_node_key_file(tmp_path: Path) -> None:
    key = load_or_create_node_key(tmp_path)
    path = tmp_path / "keys" / "node-ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_node_key(tmp_path)
    assert public_key_id(again.public_key()) == public_key_id(key.public_key())
    assert len(public_key_id(key.public_key())) == 16
    pem = audit.public_key_pem(key.public_key())
    assert public_key_id(audit.load_public_key(pem)) == public_key_id(key.public_key())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_node_key(tmp_path)


def test_public_api() -> None:
    assert audit.__all__ == sorted(audit.__all__, key=lambda n: (not n.isupper(), n))
    for name in audit.__all__:
        assert hasattr(audit, name), name
    assert {"AuditLog", "AuditRecord", "AuditEntry", "VerifyResult", "to_audit_event",
            "load_or_create_node_key", "public_key_id", "verify_folder",
            "export_folder"} <= set(audit.__all__)
