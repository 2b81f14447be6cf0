"""The hub: member registry, agreements, task broker and result pooling.

The hub is a broker, not a data holder: it verifies who is talking (every request is
signed with a member's key and checked against its membership certificate and the
authority's revocation list), stores signed tasks, hands them to the nodes that poll
for them, stores the aggregates the nodes release, and pools them. It never sees a
row of patient data, and it cannot forge a task: each task carries the requester's
own signature, which every node checks itself.

Layout of a hub folder::

    HUB/hub.sqlite          members, agreements, tasks, results
    HUB/keys/               the hub's ed25519 key
    HUB/ca-cert.pem         the network authority's certificate (trust anchor)
    HUB/crl.pem             the authority's revocation list (optional)
    HUB/hub-cert.pem        the hub's own membership certificate
    HUB/audit.sqlite        the hub's audit log: every signed message it accepted
    HUB/nonces.sqlite       seen request nonces (replay protection across restarts)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthmesh.algorithms import ALGORITHMS
from healthmesh.audit import AuditLog, AuditRecord, load_or_create_node_key
from healthmesh.errors import HealthmeshError
from healthmesh.network.agreements import Agreement, AgreementError
from healthmesh.network.hub_state import FINAL, HubState
from healthmesh.network.members import MemberDirectory, verify_agreement_signatures
from healthmesh.security import RequestVerifier, SQLiteNonceStore, verify_payload

__all__ = ["Hub", "HubError", "open_hub"]

TASK_ROLES = frozenset({"research", "public-health", "provider", "payer"})
NODE_ROLES = frozenset({"provider", "lab", "payer", "pharmacy", "public-health", "research"})
MAX_WAIT = 60.0
CONTACT_GRACE = 10.0  # a node heard from this recently counts as connected


class HubError(HealthmeshError):
    """A request the hub refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Hub:
    folder: Path
    state: HubState
    directory: MemberDirectory
    verifier: RequestVerifier
    audit: AuditLog
    org: str
    contacts: dict[str, float] = field(default_factory=dict)  # org -> last request time

    def close(self) -> None:
        self.audit.close()

    # -- authentication ------------------------------------------------------------------

    def authenticate(self, headers: Any, method: str, path: str, body: bytes) -> str:
        """The verified sender of a signed request (raises HubError 401/403)."""
        try:
            verified = self.verifier.verify(headers, method, path, body)
        except HealthmeshError as exc:
            raise HubError(f"request refused: {exc}", 401) from None
        self.audit.append_journaled(AuditRecord(
            actor=verified.sender, action="hub-request", decision="permit",
            organisation=verified.sender, reason=f"{method} {path.split('?')[0]}",
            detail={"jws": verified.token[:3000]},
        ))
        return verified.sender

    # -- registry ------------------------------------------------------------------------

    def register(self, cert_pem: str, endpoint: str | None = None,
                 box_key: str | None = None) -> str:
        """Add (or renew) a member from its membership certificate."""
        membership = self.directory.verify_cert(cert_pem)
        org = f"Organization/{membership.org_id}"
        self.state.put_member(org, membership.org_name, list(membership.roles), cert_pem,
                              box_key, endpoint)
        return org

    def members(self) -> list[dict[str, Any]]:
        """The registry, with whether each member is connected now."""
        alive = self.alive_sites()
        return [{**{k: v for k, v in m.items() if k != "last_seen"},
                 "connected": m["org"] in alive} for m in self.state.members()]

    # -- agreements ----------------------------------------------------------------------

    def put_agreement(self, sender: str, body: Any) -> dict[str, Any]:
        """Store an agreement (or merge new signatures into the stored one)."""
        try:
            agreement = Agreement.from_json(body)
        except AgreementError as exc:
            raise HubError(str(exc), 422) from None
        if sender not in agreement.parties() and sender != self.org:
            raise HubError(f"{sender} is not a party to agreement {agreement.id}", 403)
        stored = self.state.agreement(agreement.id)
        if stored is not None:
            old = Agreement.from_json(stored)
            if old.body() != agreement.body():
                raise HubError(f"agreement {agreement.id} exists with different terms; "
                               "agreements are immutable, create a new id", 409)
            agreement = Agreement(**{**agreement.__dict__,
                                     "signatures": {**old.signatures, **agreement.signatures}})
        try:
            verify_agreement_signatures(agreement, self.directory.public_key, require_all=False)
        except AgreementError as exc:
            raise HubError(str(exc), 422) from None
        self.state.put_agreement(agreement.to_json())
        return agreement.to_json()

    def agreement(self, agreement_id: str) -> dict[str, Any]:
        found = self.state.agreement(agreement_id)
        if found is None:
            raise HubError(f"no agreement {agreement_id!r}", 404)
        return found

    # -- tasks ---------------------------------------------------------------------------

    def submit(self, sender: str, token: str) -> dict[str, Any]:
        """Accept a task signed by ``sender``; target the agreement's providers."""
        member = self._member(sender)
        if not TASK_ROLES & set(member["roles"]):
            raise HubError(f"{sender} has no role that may ask questions", 403)
        try:
            task = verify_payload(token, self.directory.public_key(sender))
        except HealthmeshError as exc:
            raise HubError(f"task signature: {exc}", 401) from None
        task = _check_task_shape(task, sender)
        agreement = Agreement.from_json(self.agreement(task["agreement"]))
        if sender != agreement.requester:
            raise HubError(f"{sender} is not the requester of {agreement.id}", 403)
        algorithm = ALGORITHMS.get(task["algorithm"])
        if algorithm is None:
            raise HubError(f"unknown algorithm {task['algorithm']!r}", 422)
        try:  # early, clear errors for the requester; every node checks again itself
            algorithm.check(task["params"])
        except HealthmeshError as exc:
            raise HubError(str(exc), 422) from None
        sites = task.get("sites") or list(agreement.providers)
        unknown = [s for s in sites if s not in agreement.providers]
        if unknown:
            raise HubError(f"not providers under {agreement.id}: {', '.join(unknown)}", 422)
        if self.state.task(task["id"]) is not None:
            raise HubError(f"task {task['id']} was already submitted", 409)
        self.state.add_task(task, token, sites)
        self.purge_expired()
        return {"id": task["id"], "sites": sites}

    def purge_expired(self) -> int:
        """Apply every agreement's retention duty to the results the hub holds."""
        now, purged = time.time(), 0
        for body in self.state.agreements():
            purged += self.state.purge_results(body["id"],
                                               now - 86400 * int(body["retention_days"]))
        return purged

    def alive_sites(self) -> set[str]:
        """Members heard from in the last few seconds (a polling node is heard from
        every quarter second)."""
        now = time.time()
        return {org for org, at in self.contacts.items() if now - at < CONTACT_GRACE}

    def status(self, sender: str, task_id: str) -> dict[str, Any]:
        """The task, each site's status and released result, and the pooled rows."""
        found = self.state.task(task_id)
        if found is None:
            raise HubError(f"no task {task_id!r}", 404)
        task = found["task"]
        if sender != task["requester"]:
            raise HubError("only the requester may read a task's results", 403)
        targets = self.state.targets(task_id)
        outcomes = self._overdue(task, found["created"], targets)
        if outcomes:
            self.state.finish(task_id, outcomes)
            targets = self.state.targets(task_id)
        done = all(t["status"] in FINAL for t in targets)
        return {"task": task, "token": found["token"], "done": done,
                "sites": targets, "pooled": self._pool(task, targets) if done else None}

    def _overdue(self, task: dict[str, Any], created: float,
                 targets: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """Sites that will not answer: silent for CONTACT_GRACE seconds since the task
        was sent (``unreachable``), or past the deadline (``timeout``)."""
        now, outcomes = time.time(), {}
        busy = self.state.busy_sites()
        for target in targets:
            if target["status"] in FINAL:
                continue
            heard = self.contacts.get(target["site"], 0.0)
            if now >= task["deadline"]:
                outcomes[target["site"]] = (
                    ("timeout", "held for a data steward's release review past the deadline")
                    if target["status"] == "review" else
                    ("timeout", "no answer before the agreement's deadline")
                    if heard >= created else
                    ("unreachable", "the node has not contacted the hub since the task was sent"))
            elif (target["status"] == "pending" and target["site"] not in busy
                  and now - created > CONTACT_GRACE and now - heard > CONTACT_GRACE):
                outcomes[target["site"]] = (
                    "unreachable", f"the node has not contacted the hub for "
                    f"{now - heard:.0f} s" if heard else "the node has never connected")
        return outcomes

    def _pool(self, task: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
        released = [t for t in targets if t["status"] == "ok" and t["result"]]
        algorithm = ALGORITHMS[task["algorithm"]]
        rows = algorithm.pool([{"site": t["site"], **t["result"]} for t in released])
        return {"sites_covered": [t["site"] for t in released],
                "sites_missing": [t["site"] for t in targets if t not in released],
                "rows": rows,
                "epsilon_spent": sum(float(t["result"].get("epsilon_spent") or 0)
                                     for t in released)}

    # -- dataset catalogue ---------------------------------------------------------------

    def describe(self, site: str, body: Any) -> None:
        """A node's description of its data (tables, columns, approximate size)."""
        if not isinstance(body, dict) or not isinstance(body.get("tables"), dict):
            raise HubError("a catalogue entry needs a tables object", 422)
        self.state.put_catalogue(site, {k: body[k] for k in ("name", "tables", "patients",
                                                             "agreements", "described")
                                        if k in body})

    # -- node agents ---------------------------------------------------------------------

    def take(self, site: str) -> list[dict[str, Any]]:
        """A node agent's pending tasks (called by its long-poll several times a second)."""
        self.contacts[site] = time.time()
        return self.state.take_pending(site)

    def answer(self, site: str, task_id: str, body: Any) -> None:
        """Store a node's signed answer to a task."""
        if not isinstance(body, dict) or body.get("status") not in (
                "ok", "refused", "error", "review"):
            raise HubError("an answer needs status ok, refused, error or review", 422)
        result, signature = body.get("result"), body.get("signature")
        if body["status"] == "ok":
            if not isinstance(result, dict) or not isinstance(signature, str):
                raise HubError("an ok answer needs a result object and its signature", 422)
            try:
                self.directory.check_result_signature(site, task_id, result, signature)
            except HealthmeshError as exc:
                raise HubError(str(exc), 422) from None
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
            raise HubError("reason must be a string of at most 2000 characters", 422)
        self.contacts[site] = time.time()
        if not self.state.set_result(task_id, site, body["status"], reason,
                                     result if body["status"] == "ok" else None, signature):
            raise HubError(f"task {task_id} is not open for {site}", 409)

    def _member(self, org: str) -> dict[str, Any]:
        member = self.state.member(org)
        if member is None:
            raise HubError(f"{org} is not a member of this network", 403)
        return member


def _check_task_shape(task: Any, sender: str) -> dict[str, Any]:
    if not isinstance(task, dict):
        raise HubError("a task must be a JSON object", 422)
    for key, kind in (("id", str), ("agreement", str), ("requester", str), ("purpose", str),
                      ("algorithm", str), ("params", dict), ("deadline", float | int)):
        if not isinstance(task.get(key), kind):
            raise HubError(f"task.{key} is missing or has the wrong type", 422)
    if task["requester"] != sender:
        raise HubError("task.requester must be the sender", 403)
    try:
        uuid.UUID(hex=task["id"])
    except ValueError:
        raise HubError("task.id must be a UUID (hex)", 422) from None
    if not time.time() < task["deadline"] <= time.time() + 24 * 3600:
        raise HubError("task.deadline must be in the next 24 hours", 422)
    sites = task.get("sites")
    if sites is not None and (not isinstance(sites, list)
                              or not all(isinstance(s, str) for s in sites)):
        raise HubError("task.sites must be a list of Organization references", 422)
    return task


def open_hub(folder: Path) -> Hub:
    """Open a hub folder made by ``healthmesh network up`` (or ``hub init``)."""
    folder = Path(folder)
    if not (folder / "ca-cert.pem").exists():
        raise HubError(f"{folder} is not a hub folder (no ca-cert.pem)", 500)
    key = load_or_create_node_key(folder)
    directory = MemberDirectory.for_folder(folder)
    state = HubState(folder / "hub.sqlite")
    directory.lookup = lambda org: (state.member(org) or {}).get("cert")
    verifier = RequestVerifier(directory.public_key_or_none,
                               nonce_store=SQLiteNonceStore(folder / "nonces.sqlite"))
    audit = AuditLog(folder, signing_key=key, journal=True)  # off the request path
    org = f"Organization/{directory.verify_cert((folder / 'hub-cert.pem').read_text()).org_id}"
    return Hub(folder, state, directory, verifier, audit, org)
