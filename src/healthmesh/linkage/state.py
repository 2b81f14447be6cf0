"""The linkage unit's memory: encodings received, network person ids, steward decisions.

One SQLite file holds every site's records (local id, CLK, keyed blocking keys) with the
network person each belongs to, and an append-only audit trail of linking runs and of the
splits and merges data stewards make (who, when, why). Linking is incremental: records
that arrive later are scored against everything already held and join an existing person
or start a new one, without re-encoding or re-scoring the rest. Two people already known
are never merged by the algorithm — only by a steward's :meth:`LinkageState.merge`.

Network person ids are random (``P-`` and 16 hex digits): they say nothing about the
person and differ between linkage units.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson

from healthmesh.linkage.errors import LinkageStateError
from healthmesh.linkage.link import DEFAULT_THRESHOLD, LinkStats, SiteEncodings, link_sites

__all__ = ["LinkageState", "new_person_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    site TEXT NOT NULL, local_id TEXT NOT NULL, clk BLOB NOT NULL, blocks TEXT NOT NULL,
    person TEXT, added_at TEXT NOT NULL, PRIMARY KEY (site, local_id));
CREATE INDEX IF NOT EXISTS records_person ON records (person);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL);
"""


def new_person_id() -> str:
    """A fresh, random network person id."""
    return "P-" + secrets.token_hex(8)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LinkageState:
    """The linkage unit's SQLite state (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.executescript(_SCHEMA)
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise LinkageStateError(f"cannot open linkage state {path}: {exc}") from exc

    def __enter__(self) -> LinkageState:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def add(self, encodings: SiteEncodings, schema: str) -> dict[str, int]:
        """Store a site's encodings; returns counts of ``added``, ``updated``, ``unchanged``.

        A record already held keeps its person; a changed CLK replaces the old one.
        Raises :class:`LinkageStateError` if ``schema`` is not the state's schema.
        """
        known = self._meta("schema")
        if known is not None and known != schema:
            raise LinkageStateError(f"encodings of {encodings.site} use schema {schema[:12]}…, "
                                    f"this linkage state holds schema {known[:12]}…")
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        now = _now()
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (schema,))
            for rid, clk, keys in zip(encodings.ids, encodings.clks, encodings.blocks,
                                      strict=True):
                counts[self._upsert(encodings.site, rid, clk.tobytes(),
                                    orjson.dumps(keys).decode(), now)] += 1
        return counts

    def _upsert(self, site: str, rid: str, clk: bytes, blocks: str, now: str) -> str:
        row = self.db.execute("SELECT clk, blocks FROM records WHERE site = ? AND local_id = ?",
                              (site, rid)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO records VALUES (?, ?, ?, ?, NULL, ?)",
                            (site, rid, clk, blocks, now))
            return "added"
        if (bytes(row[0]), row[1]) == (clk, blocks):
            return "unchanged"
        self.db.execute("UPDATE records SET clk = ?, blocks = ? WHERE site = ? AND local_id = ?",
                        (clk, blocks, site, rid))
        return "updated"

    def link(self, threshold: float = DEFAULT_THRESHOLD, blocking: str = "keys",
             actor: str = "linkage-unit") -> dict[str, Any]:
        """Link every record that has no person yet; returns what happened."""
        if not 0.0 < threshold <= 1.0:
            raise LinkageStateError("the threshold must be in (0, 1]")
        sites, persons = self._load()
        new = {i: np.flatnonzero([p is None for p in persons[i]]) for i in range(len(sites))}
        existing: dict[str, list[tuple[int, int]]] = {}
        for i, people in enumerate(persons):
            for k, person in enumerate(people):
                if person is not None:
                    existing.setdefault(person, []).append((i, k))
        stats = LinkStats()
        clusters = link_sites(sites, threshold, blocking, list(existing.values()), new, stats)
        assigned, joined, created = self._assign(sites, persons, clusters)
        summary = {"new_records": int(sum(len(v) for v in new.values())), "joined": joined,
                   "new_people": created, "compared": stats.compared,
                   "candidates": stats.candidates, "threshold": threshold,
                   "blocking": blocking, "seconds": round(stats.seconds_total, 3)}
        with self._transaction():
            self.db.executemany("UPDATE records SET person = ? WHERE site = ? AND local_id = ?",
                                assigned)
            self._audit(actor, "link", "linking run", summary)
        return summary

    def _assign(self, sites: list[SiteEncodings], persons: list[list[str | None]],
                clusters: list[list[tuple[int, int]]]) -> tuple[list[tuple[str, str, str]],
                                                                 int, int]:
        assigned, joined, created = [], 0, 0
        for cluster in clusters:
            fresh = [(i, k) for i, k in cluster if persons[i][k] is None]
            if not fresh:
                continue
            known = [persons[i][k] for i, k in cluster if persons[i][k] is not None]
            person = known[0] if known else new_person_id()
            joined += len(fresh) if known else 0
            created += 0 if known else 1
            assigned.extend((person, sites[i].site, sites[i].ids[k]) for i, k in fresh)
        return assigned, joined, created

    def _load(self) -> tuple[list[SiteEncodings], list[list[str | None]]]:
        rows = self.db.execute(
            "SELECT site, local_id, clk, blocks, person FROM records ORDER BY site, local_id")
        grouped: dict[str, list[tuple[str, bytes, str, str | None]]] = {}
        for site, rid, clk, blocks, person in rows:
            grouped.setdefault(site, []).append((rid, bytes(clk), blocks, person))
        sites, persons = [], []
        for site, items in grouped.items():
            width = len(items[0][1])
            clks = np.frombuffer(b"".join(i[1] for i in items), np.uint8).reshape(-1, width)
            sites.append(SiteEncodings(site, [i[0] for i in items], clks,
                                       [orjson.loads(i[2]) for i in items]))
            persons.append([i[3] for i in items])
        return sites, persons

    def split(self, site: str, local_id: str, actor: str, reason: str) -> str:
        """Take one record out of its person into a new person; returns the new id."""
        _require(actor, reason)
        row = self.db.execute("SELECT person FROM records WHERE site = ? AND local_id = ?",
                              (site, local_id)).fetchone()
        if row is None:
            raise LinkageStateError(f"no record {local_id!r} from site {site!r}")
        person = new_person_id()
        with self._transaction():
            self.db.execute("UPDATE records SET person = ? WHERE site = ? AND local_id = ?",
                            (person, site, local_id))
            self._audit(actor, "split", reason, {"site": site, "local_id": local_id,
                                                 "from": row[0], "to": person})
        return person

    def merge(self, keep: str, other: str, actor: str, reason: str) -> int:
        """Move every record of person ``other`` to person ``keep``; returns how many.

        Refused when both people hold a record from the same site.
        """
        _require(actor, reason)
        sites_keep = self._person_sites(keep)
        sites_other = self._person_sites(other)
        if keep == other or not sites_keep or not sites_other:
            raise LinkageStateError("merge needs two different, existing network person ids")
        if sites_keep & sites_other:
            shared = sorted(sites_keep & sites_other)
            raise LinkageStateError(f"both people have records from {shared}: split one of "
                                    "those records first")
        with self._transaction():
            moved = self.db.execute("UPDATE records SET person = ? WHERE person = ?",
                                    (keep, other)).rowcount
            self._audit(actor, "merge", reason, {"into": keep, "from": other, "records": moved})
        return moved

    def _person_sites(self, person: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT site FROM records WHERE person = ?",
                                              (person,))}

    def sites(self) -> list[str]:
        """The sites whose records the state holds."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT site FROM records ORDER BY site")]

    def link_table(self, site: str) -> list[tuple[str, str]]:
        """``(local id, network person id)`` of one site's linked records."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT local_id, person FROM records WHERE site = ? AND person IS NOT NULL "
            "ORDER BY local_id", (site,))]

    def audit_trail(self) -> list[dict[str, Any]]:
        """Every linking run and steward decision, oldest first."""
        return [{"seq": r[0], "at": r[1], "actor": r[2], "action": r[3], "reason": r[4],
                 "detail": orjson.loads(r[5])}
                for r in self.db.execute("SELECT * FROM audit ORDER BY seq")]

    def _audit(self, actor: str, action: str, reason: str, detail: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO audit (at, actor, action, reason, detail) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (_now(), actor, action, reason, orjson.dumps(detail).decode()))

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error, sqlite errors translated."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LinkageStateError(f"linkage state is busy or unwritable: {exc}") from exc

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self.db.execute("ROLLBACK")
                raise LinkageStateError(f"cannot write linkage state: {error}") from error
        self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise LinkageStateError(f"cannot write linkage state: {exc}") from exc


def _require(actor: str, reason: str) -> None:
    if not actor.strip() or not reason.strip():
        raise LinkageStateError("a steward decision needs the steward's id and a reason")
