"""Consent coverage per (purpose, requester), kept in the store and filtered in SQL.

For each scope — a purpose of use and a requester — every patient is either
fully visible (``all``), invisible (``none``) or visible per record (``partial``:
the consent depends on the data's type, labels or time, or on when it is asked).
Most patients follow the purpose's default, so a scope stores only its default
and the patients that differ, in the ``access_scope`` table of the store.

Revocation takes effect at once: the store calls :meth:`AccessScopes.refresh`
inside the very transaction that writes a Consent (before COMMIT), so the
coverage rows and the Consents can never disagree, in memory or on disk.
Consents with periods are always ``partial`` (decided per record at request
time), since the passing of time changes them without any write.

This module uses the SQLite store's tables directly; a PostgreSQL backend will
provide the same operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from healthmesh.consent.decide import AccessRequest, coverage
from healthmesh.consent.model import ConsentError, ParsedConsent
from healthmesh.consent.parse import parse_consent
from healthmesh.consent.policy import Policy
from healthmesh.gate.requester import Requester
from healthmesh.store.sqlite import SQLiteStore, now_us

__all__ = ["ALL", "NONE", "PARTIAL", "AccessScopes"]

NONE, PARTIAL, ALL = 0, 1, 2
PARSE_CACHE_SIZE = 100_000
_CODES = {"none": NONE, "partial": PARTIAL, "all": ALL}
SCHEMA = """
CREATE TABLE IF NOT EXISTS access_scope_keys (
    scope TEXT PRIMARY KEY, purpose TEXT, actor TEXT, patient TEXT, fallback INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS access_scope (
    scope TEXT, patient TEXT, coverage INTEGER, PRIMARY KEY (scope, patient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_scope_coverage ON access_scope (scope, coverage);
CREATE TABLE IF NOT EXISTS consent_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER);
INSERT OR IGNORE INTO consent_epoch VALUES (1, 0);
"""


class AccessScopes:
    """Coverage of every patient for every scope in use, maintained transactionally."""

    def __init__(self, store: SQLiteStore, policy: Policy, node_org: str | None) -> None:
        self.store = store
        self.policy = policy
        self.node_org = node_org
        store._writer.executescript(SCHEMA)
        store.watch("Consent", self.refresh)
        self._fallbacks: dict[str, int] = {}  # a scope's fallback never changes once built
        self._parsed: dict[tuple[str, int], ParsedConsent | None] = {}
        self._by_epoch: dict[tuple[str, int], list[ParsedConsent]] = {}

    # -- consents and payers -------------------------------------------------------------

    def consents_of(self, patient: str) -> list[ParsedConsent]:
        """The parsed Consents of one patient (unparseable ones are skipped)."""
        return self._consents("AND patient = ?", [patient]).get(patient, [])

    def epoch(self) -> int:
        """A counter the Consent-writing transaction increments (see :meth:`refresh`)."""
        row = self.store.reader().execute("SELECT value FROM consent_epoch").fetchone()
        return int(row[0])

    def consents_at(self, patient: str, epoch: int) -> list[ParsedConsent]:
        """The patient's consents, cached per epoch: an entry made under epoch E holds data
        read after E was committed, so it is never older than E; a Consent write moves
        the epoch on, and every later request misses the old entries."""
        key = (patient, epoch)
        found = self._by_epoch.get(key)
        if found is None:
            if len(self._by_epoch) > PARSE_CACHE_SIZE:
                self._by_epoch.clear()
            found = self._by_epoch[key] = self.consents_of(patient)
        return found

    def _payers_for(self, requester: Requester, patient: str) -> frozenset[str]:
        """The patient's payers, looked up only for purposes whose recipients are payers."""
        rule = self.policy.rule_for(requester.purpose) if requester.purpose else None
        if rule is None or rule.recipients != "payers":
            return frozenset()
        return self.payers_of(patient)

    def _consents(self, where: str, args: list[Any]) -> dict[str, list[ParsedConsent]]:
        rows = self.store.reader().execute(
            "SELECT patient, id, version, content FROM resources WHERE type = 'Consent' "
            f"AND content IS NOT NULL AND patient IS NOT NULL {where}", args,
        )
        out: dict[str, list[ParsedConsent]] = {}
        for patient, rid, version, content in rows:
            parsed = self._parse(rid, version, content)
            if parsed is not None:
                out.setdefault(patient, []).append(parsed)
        return out

    def _parse(self, rid: str, version: int, content: bytes) -> ParsedConsent | None:
        """Parse a Consent version once: a (id, version) never changes, so this cache
        can never hold a revoked consent as current (the revocation is a new version)."""
        key = (rid, version)
        if key not in self._parsed:
            if len(self._parsed) > PARSE_CACHE_SIZE:
                self._parsed.clear()
            try:
                self._parsed[key] = parse_consent(orjson.loads(content))
            except ConsentError:
                self._parsed[key] = None  # rejected at write; old data is ignored, not trusted
        return self._parsed[key]

    def payers_of(self, patient: str) -> frozenset[str]:
        """Organisations paying for the patient's care (Coverage.payor of their Coverages)."""
        return self._payers("AND r.patient = ?", [patient]).get(patient, frozenset())

    def _payers(self, where: str, args: list[Any]) -> dict[str, frozenset[str]]:
        rows = self.store.reader().execute(
            "SELECT DISTINCT r.patient, d.ttype || '/' || d.tid FROM resources r "
            "JOIN sp_reference d ON d.rid = r.rid AND d.pid = ? "
            f"WHERE r.type = 'Coverage' AND r.content IS NOT NULL {where}",
            [self.store.pid("Coverage", "payor") or -1, *args],
        )
        out: dict[str, set[str]] = {}
        for patient, payer in rows:
            out.setdefault(patient, set()).add(payer)
        return {p: frozenset(v) for p, v in out.items()}

    def request(
        self, requester: Requester, patient: str, payers: frozenset[str] | None = None,
        **data: Any,
    ) -> AccessRequest:
        """The consent question for ``requester`` about ``patient`` (data attributes optional)."""
        if self.node_org and data.get("sources") is not None:
            data["sources"] = data["sources"] | {self.node_org}  # the node holds the record
        return AccessRequest(
            patient_id=patient, purpose=requester.purpose, at=now_us(),
            requester=requester.actor if requester.actor != "anonymous" else None,
            requester_is_patient=requester.patient == patient,
            patient_payers=self._payers_for(requester, patient) if payers is None else payers,
            node_org=self.node_org, **data,
        )

    # -- coverage ---------------------------------------------------------------------

    def coverage(
        self, requester: Requester, patient: str,
        consents: list[ParsedConsent] | None = None, payers: frozenset[str] | None = None,
    ) -> int:
        """ALL, PARTIAL or NONE for this requester and patient, decided now."""
        consents = self.consents_of(patient) if consents is None else consents
        now = now_us()
        if any(_timed(c, now) for c in consents):
            return PARTIAL
        question = self.request(requester, patient, payers)
        return _CODES[coverage(question, consents, self.policy)]

    def _fallback(self, requester: Requester) -> int:
        """Coverage of a patient with no consents and no payer relation."""
        probe = AccessRequest(
            patient_id="\x00none", purpose=requester.purpose, at=now_us(),
            requester=requester.actor if requester.actor != "anonymous" else None,
            requester_is_patient=False, node_org=self.node_org,
        )
        return _CODES[coverage(probe, [], self.policy)]

    # -- scopes -----------------------------------------------------------------------

    def restriction(self, requester: Requester) -> tuple[str, list[object]] | None:
        """The SQL condition on ``resources r`` for this requester (building the scope once);
        None when nothing needs filtering (everyone's data may be seen, e.g. treatment on a
        node where nobody opted out), which keeps counts on the index alone."""
        key = requester.scope_key()
        fallback = self._ensure(requester, key)
        if requester.is_patient and requester.purpose == "PATRQT":
            return "(r.patient IS NULL OR r.patient = ?)", [requester.patient]
        # correlated lookups on the scope's primary key: cheap per candidate row, and no
        # materialised list of (possibly hundreds of thousands of) patients per query
        if fallback == ALL and not self._has_denials(key):
            return None
        if fallback == ALL:
            return ("(r.patient IS NULL OR NOT EXISTS (SELECT 1 FROM access_scope s "
                    "WHERE s.scope = ? AND s.patient = r.patient AND s.coverage = 0))", [key])
        return ("(r.patient IS NULL OR EXISTS (SELECT 1 FROM access_scope s "
                "WHERE s.scope = ? AND s.patient = r.patient AND s.coverage > 0))", [key])

    def partial_condition(self, requester: Requester) -> tuple[str, list[object]] | None:
        """SQL selecting the records of this requester's partially covered patients, or
        None when there are none."""
        key = requester.scope_key()
        row = self.store.reader().execute(
            "SELECT 1 FROM access_scope WHERE scope = ? AND coverage = 1 LIMIT 1", (key,)
        ).fetchone()
        if row is None:
            return None
        return ("r.patient IN (SELECT patient FROM access_scope WHERE scope = ? "
                "AND coverage = 1)", [key])

    def _has_denials(self, key: str) -> bool:
        row = self.store.reader().execute(
            "SELECT 1 FROM access_scope WHERE scope = ? AND coverage = 0 LIMIT 1", (key,)
        ).fetchone()
        return row is not None

    def partial_among(self, requester: Requester, patients: Iterable[str | None]) -> set[str]:
        """Which of ``patients`` this requester sees only per record (``partial``)."""
        wanted = sorted({p for p in patients if p})
        found: set[str] = set()
        key = requester.scope_key()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.store.reader().execute(
                f"SELECT patient FROM access_scope WHERE scope = ? AND coverage = 1 "
                f"AND patient IN ({marks})", (key, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def _ensure(self, requester: Requester, key: str) -> int:
        if key in self._fallbacks:
            return self._fallbacks[key]
        fallback = self._build(requester, key)
        self._fallbacks[key] = fallback
        return fallback

    def _build(self, requester: Requester, key: str) -> int:
        row = self.store.reader().execute(
            "SELECT fallback FROM access_scope_keys WHERE scope = ?", (key,)
        ).fetchone()
        if row is not None:
            return int(row[0])
        with self.store.transaction():
            row = self.store._writer.execute(
                "SELECT fallback FROM access_scope_keys WHERE scope = ?", (key,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            fallback = self._fallback(requester)
            self.store._writer.execute(
                "INSERT INTO access_scope_keys VALUES (?, ?, ?, ?, ?)",
                (key, requester.purpose, requester.actor, requester.patient, fallback),
            )
            self._fill(requester, key, fallback, self._interesting_patients(requester))
            return fallback

    def _interesting_patients(self, requester: Requester) -> set[str]:
        """Patients whose coverage may differ from the fallback: consents or payer links."""
        rows = self.store._writer.execute(
            "SELECT DISTINCT patient FROM resources WHERE type = 'Consent' "
            "AND content IS NOT NULL AND patient IS NOT NULL"
        )
        patients = {r[0] for r in rows}
        if requester.organisation:
            org_id = requester.actor.split("/", 1)[1]
            rows = self.store._writer.execute(
                "SELECT DISTINCT r.patient FROM sp_reference d JOIN resources r ON r.rid = d.rid "
                "WHERE d.pid = ? AND d.tid = ? AND r.patient IS NOT NULL",
                (self.store.pid("Coverage", "payor") or -1, org_id),
            )
            patients.update(r[0] for r in rows)
        return patients

    def _fill(self, requester: Requester, key: str, fallback: int, patients: Iterable[str]) -> None:
        consents = self._consents("", [])  # one pass over every Consent of the node
        payers = self._payers("", [])
        rows = []
        for patient in patients:
            value = self.coverage(requester, patient, consents.get(patient, []),
                                  payers.get(patient, frozenset()))
            if value != fallback:
                rows.append((key, patient, value))
        self.store._writer.executemany(
            "INSERT OR REPLACE INTO access_scope VALUES (?, ?, ?)", rows
        )

    def refresh(self, patients: set[str]) -> None:
        """Recompute ``patients`` in every scope (called inside the writing transaction)."""
        writer = self.store._writer
        writer.execute("UPDATE consent_epoch SET value = value + 1")
        scopes = writer.execute(
            "SELECT scope, purpose, actor, patient, fallback FROM access_scope_keys"
        ).fetchall()
        for key, purpose, actor, patient_self, fallback in scopes:
            requester = Requester(actor, purpose, patient_self)
            for patient in patients:
                writer.execute("DELETE FROM access_scope WHERE scope = ? AND patient = ?",
                               (key, patient))
                value = self.coverage(requester, patient)
                if value != fallback:
                    writer.execute("INSERT INTO access_scope VALUES (?, ?, ?)",
                                   (key, patient, value))


def _timed(consent: ParsedConsent, now: int) -> bool:
    """True when the passing of time alone will change what this consent allows:
    a consent or provision period that starts or ends in the future."""
    periods = [consent.period, *(p.period for p in consent.provision.walk())]
    return any(edge > now for period in periods if period is not None for edge in period.edges())
