"""FHIR Bulk Data ``$export`` (system, Patient and Group level), through the egress gate.

A kick-off starts a job in a background thread that streams each requested
resource type through the requester's :class:`~healthmesh.gate.egress.GuardedRepository`
(consent-filtered and audited like any other read) into NDJSON files under
``DIR/exports/<job>/``. The job's state lives in ``job.json`` beside its files, so
status survives a restart (an unfinished job is reported as failed after one).
Only the requester who started a job may poll it or download its files.

A job can be **de-identified** (``_deidentify=safe-harbor|date-shift|pseudonymize``, a
healthmesh extension): every resource goes through
:class:`~healthmesh.privacy.deid.Deidentifier` after the gate has let it out and before
it is written. Exports for the purposes in the setting ``deidentify_exports_for``
(research by default) are always de-identified, with ``export_deid_profile`` unless the
request names a profile; asking for ``none`` there is refused. Keyed profiles use one
project key per recipient organisation, ``DIR/keys/deid/<organisation>.key``, made on
first use: the same recipient gets the same pseudonyms in every export, another recipient
unlinkable ones, and only the node can re-identify (``healthmesh deid-reidentify``).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from healthmesh.errors import FhirError, InvalidRequest, NotFound
from healthmesh.fhir.search_params import date_range
from healthmesh.fhir.validation import resource_types
from healthmesh.gate.access import scope_params, visible_type
from healthmesh.gate.egress import EgressGate
from healthmesh.gate.requester import Forbidden, Requester
from healthmesh.settings import Settings, deidentified_purposes
from healthmesh.store.sqlite import instant

if TYPE_CHECKING:  # imported when an export is de-identified (pandas makes it slow)
    from healthmesh.privacy.deid import Deidentifier, DeidKey

__all__ = ["BulkExports", "ExportJob"]

_DEID_PROFILES = ("safe-harbor", "date-shift", "pseudonymize")

_JOB_FILE = "job.json"


@dataclass
class ExportJob:
    id: str
    scope_key: str
    actor: str
    purpose: str | None
    patient: str | None
    level: str  # system | patient | group
    types: list[str]
    since: str | None
    group: str | None
    request_url: str
    transaction_time: str
    status: str = "running"  # running | done | failed | cancelled
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    progress: str = ""
    deidentified: str | None = None  # the de-identification profile, if any
    deid_key: str | None = None  # fingerprint of the project key it used


class BulkExports:
    """Bulk export jobs of one node."""

    def __init__(self, folder: Path, gate: EgressGate, settings: Settings | None = None) -> None:
        self.folder = folder / "exports"
        self.keys = folder / "keys" / "deid"
        self.gate = gate
        self.settings = settings or Settings()
        self._threads: dict[str, threading.Thread] = {}
        self._key_lock = threading.Lock()

    # -- kick-off -------------------------------------------------------------------

    def start(
        self, requester: Requester, *, level: str, types: list[str] | None,
        since: str | None, group: str | None, request_url: str,
        deidentify: str | None = None,
    ) -> ExportJob:
        """Validate the request and start the job; raises InvalidRequest on bad parameters
        and Forbidden when the caller may not have this export (or not undeidentified)."""
        if requester.purpose is None and not requester.is_patient:
            raise Forbidden("A purpose of use (X-Purpose-Of-Use) is required to export data")
        profile = self._profile(requester, deidentify)
        chosen = self._types(types)
        if types:  # each type asked for must be within the access token's scopes
            for rtype in chosen:
                scope_params(requester, rtype, "r")
        else:  # "everything" means everything the token may read
            chosen = [t for t in chosen if visible_type(requester, t)]
        if since is not None:
            try:
                date_range(since)
            except ValueError as exc:
                raise InvalidRequest(f"Invalid _since '{since}': {exc}") from None
        members = None
        if level == "group":
            members = self.gate.for_request(requester).group_members(group or "")
        job = ExportJob(
            id=uuid.uuid4().hex, scope_key=requester.scope_key(), actor=requester.actor,
            purpose=requester.purpose, patient=requester.patient, level=level, types=chosen,
            since=since, group=group, request_url=request_url,
            transaction_time=instant(time.time_ns() // 1000), deidentified=profile,
        )
        deid = None
        if profile is not None:
            from healthmesh.privacy.deid import PROFILES, Deidentifier

            key = self._project_key(requester) if PROFILES[profile].needs_key else None
            deid = Deidentifier(profile, key)
            job.deid_key = None if key is None else key.fingerprint
        self._save(job)
        thread = threading.Thread(target=self._run, args=(job, requester, members, deid),
                                  daemon=True)
        self._threads[job.id] = thread
        thread.start()
        return job

    def _profile(self, requester: Requester, asked: str | None) -> str | None:
        """The de-identification profile of this export (None: identified data)."""
        if asked is not None and asked != "none" and asked not in _DEID_PROFILES:
            raise InvalidRequest(f"_deidentify must be one of {', '.join(_DEID_PROFILES)} or none, "
                                 f"not '{asked[:40]}'")
        required = not requester.is_patient and \
            requester.purpose in deidentified_purposes(self.settings)
        if asked == "none" or (asked is None and not required):
            if required:
                raise Forbidden(f"Exports for purpose {requester.purpose} are de-identified at "
                                "this node; ask for a _deidentify profile or leave it out")
            return None
        return asked or self.settings.export_deid_profile

    def _project_key(self, requester: Requester) -> DeidKey:
        """The recipient organisation's project key, created on its first export."""
        from healthmesh.privacy.deid import DeidKeyError, generate_key_file, load_key_file

        name = re.sub(r"[^A-Za-z0-9._-]", "_", requester.actor)[:120].lstrip(".")
        path = self.keys / f"{name}.key"
        with self._key_lock:
            try:
                return load_key_file(path) if path.exists() else generate_key_file(path)
            except DeidKeyError as exc:
                raise FhirError(f"The de-identification key of this recipient cannot be "
                                f"used: {exc}", [], 500, "exception") from None

    def _types(self, types: list[str] | None) -> list[str]:
        known = resource_types()
        if not types:
            return sorted(self.gate.fhir.store.counts())
        unknown = [t for t in types if t not in known]
        if unknown:
            raise InvalidRequest(f"Unknown resource type(s) in _type: {', '.join(unknown)}")
        return types

    # -- the job ----------------------------------------------------------------------

    def _run(self, job: ExportJob, requester: Requester, members: list[str] | None,
             deid: Deidentifier | None) -> None:
        try:
            repo = self.gate.for_request(requester)
            for rtype in job.types:
                if self._load(job.id).status == "cancelled":
                    return
                job.counts[rtype] = self._export_type(job, repo, rtype, members, deid)
                job.progress = f"{len(job.counts)}/{len(job.types)} types"
                self._save(job)
            job.status = "done"
        except FhirError as exc:
            job.status, job.error = "failed", exc.message
        except Exception as exc:  # a bug: record it, never leave the job running forever
            job.status, job.error = "failed", f"internal error: {type(exc).__name__}"
        self._save(job)

    def _export_type(
        self, job: ExportJob, repo: Any, rtype: str, members: list[str] | None,
        deid: Deidentifier | None,
    ) -> int:
        params = [("_lastUpdated", f"ge{job.since}")] if job.since else []
        query = repo.parse(rtype, params, strict=True)
        extra = self._level_filter(job, members)
        path = self._dir(job.id) / f"{rtype}.ndjson"
        count = 0
        with path.open("wb") as handle:
            for stored in repo.stream(query, extra=extra):
                assert stored.content is not None
                content = stored.content
                if deid is not None:  # after the gate let it out, before it is written
                    clean = deid.apply(orjson.loads(content))
                    if clean is None:
                        continue
                    content = orjson.dumps(clean)
                handle.write(content + b"\n")
                count += 1
        if count == 0:
            path.unlink()
        return count

    def _level_filter(
        self, job: ExportJob, members: list[str] | None
    ) -> tuple[str, list[object]] | None:
        if job.level == "patient":
            return "r.patient IS NOT NULL", []
        if job.level == "group":
            if not members:
                return "0", []
            marks = ",".join("?" * len(members))
            return f"r.patient IN ({marks})", list(members)
        return None

    # -- status and files -------------------------------------------------------------

    def status(self, job_id: str, requester: Requester) -> ExportJob:
        job = self._load(job_id)
        if job.scope_key != requester.scope_key():
            raise Forbidden("This export belongs to another requester")
        if job.status == "running" and job_id not in self._threads:
            job.status, job.error = "failed", "the node restarted while the export ran"
            self._save(job)
        return job

    def manifest(self, job: ExportJob, base: str) -> dict[str, Any]:
        extension = {} if job.deidentified is None else {"extension": {
            "deidentification": {"profile": job.deidentified, "key": job.deid_key}}}
        return {
            **extension,
            "transactionTime": job.transaction_time,
            "request": job.request_url,
            "requiresAccessToken": False,
            "output": [
                {"type": t, "url": f"{base}/$export-file/{job.id}/{t}.ndjson", "count": n}
                for t, n in job.counts.items() if n
            ],
            "error": [],
        }

    def file(self, job_id: str, name: str, requester: Requester) -> Path:
        job = self.status(job_id, requester)
        if job.status != "done" or not name.endswith(".ndjson"):
            raise NotFound(f"No file {name} in export {job_id}")
        path = self._dir(job_id) / name
        if path.parent != self._dir(job_id) or not path.exists():
            raise NotFound(f"No file {name} in export {job_id}")
        return path

    def cancel(self, job_id: str, requester: Requester) -> None:
        job = self.status(job_id, requester)
        job.status = "cancelled"
        self._save(job)
        thread = self._threads.pop(job_id, None)
        if thread is not None:
            thread.join(timeout=30)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    # -- persistence ------------------------------------------------------------------

    def _dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise NotFound(f"No export {job_id}")
        return self.folder / job_id

    def _save(self, job: ExportJob) -> None:
        folder = self._dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (_JOB_FILE + ".tmp")
        tmp.write_bytes(orjson.dumps(asdict(job)))
        tmp.replace(folder / _JOB_FILE)

    def _load(self, job_id: str) -> ExportJob:
        path = self._dir(job_id) / _JOB_FILE
        if not path.exists():
            raise NotFound(f"No export {job_id}")
        return ExportJob(**orjson.loads(path.read_bytes()))
