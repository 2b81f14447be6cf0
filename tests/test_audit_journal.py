"""The audit log's write-ahead journal: nothing journaled is lost or chained twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from healthmesh.audit import AuditLog, AuditRecord
from healthmesh.audit.journal import journal_path


def record(i: int) -> AuditRecord:
    return AuditRecord(actor="Organization/x", action="read", resources=(f"Patient/p{i}",),
                       patients=(f"p{i}",), decision="permit")


def test_journaled_records_are_readable_at_once_and_chained(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, journal=True)
    for i in range(50):
        log.append_journaled(record(i))
    assert log.head() == 50
    assert [e.record.patients for e in log.entries(patient="p7")] == [("p7",)]
    assert log.verify().ok
    log.close()
    again = AuditLog(tmp_path, journal=True)
    again.append_journaled(record(99))
    assert again.head() == 51 and again.verify().ok
    again.close()


def test_crash_loses_nothing_journaled(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from healthmesh.audit import AuditLog, AuditRecord
        log = AuditLog(Path({str(tmp_path)!r}), journal=True)
        log._journal._interval = 3600  # keep records in the journal: the drain never runs
        log._journal._wake.set = lambda: None
        for i in range(200):
            log.append_journaled(AuditRecord(actor="system", action="read", patients=(f"p{{i}}",)))
        print("written", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stdin is not None
    proc.stdin.close()
    with journal_path(tmp_path, 0).open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00torn")  # a frame cut short by the crash
    log = AuditLog(tmp_path, journal=True)  # recovery chains the journal first
    assert log.head() == 200
    assert log.verify().ok
    log.close()
    reopened = AuditLog(tmp_path, journal=True)
    assert reopened.head() == 200  # nothing chained twice
    reopened.close()


def test_a_second_process_appends_synchronously(tmp_path: Path) -> None:
    owner = AuditLog(tmp_path, journal=True)
    other = AuditLog(tmp_path, journal=True)  # the journal lock is taken: synchronous
    assert other._journal is None
    other.append_journaled(record(1))
    owner.append_journaled(record(2))
    assert owner.head() == 2 and owner.verify().ok
    other.close()
    owner.close()


def test_rotation_keeps_every_record_once(tmp_path: Path, monkeypatch: object) -> None:
    import healthmesh.audit.journal as journal

    monkeypatch.setattr(journal, "ROTATE_BYTES", 2000)  # type: ignore[attr-defined]
    log = AuditLog(tmp_path, journal=True)
    assert log._journal is not None
    for i in range(300):
        log.append_journaled(record(i))
        if i % 50 == 49:
            log.head()  # chained; an idle pass of the drain thread then rotates
            for _ in range(200):
                if log._journal.generation > (i // 50):
                    break
                time.sleep(0.01)
    assert log._journal.generation >= 5  # the journal rotated on the way
    assert log.head() == 300 and log.verify().ok
    log.close()
    files = sorted(p.name for p in tmp_path.glob("audit-journal-*.bin"))
    assert len(files) == 1 and files[0] != "audit-journal-00000000.bin"  # old ones removed
    again = AuditLog(tmp_path, journal=True)
    assert again.head() == 300
    again.close()
