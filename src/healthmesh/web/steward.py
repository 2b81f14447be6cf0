"""The data steward console (``/web/steward``): release review, agreements, audit, quality.

For users with the ``steward`` or ``admin`` role. Release decisions go through the same
:meth:`TaskLog.decide` as ``healthmesh release approve|reject`` and are audited with the
steward's reason; reading the audit log is itself audited (it shows who looked at whose
data). The data-quality numbers are searches through the steward's guarded repository.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from healthmesh.audit import AuditRecord
from healthmesh.network.agreements import AgreementError, load_agreement
from healthmesh.network.tasklog import TaskLog
from healthmesh.node import Node
from healthmesh.privacy.ledger import PrivacyLedger
from healthmesh.web.errors import PageError
from healthmesh.web.quality import quality_summary, reject_counts
from healthmesh.web.render import html_page, redirect
from healthmesh.web.routing import PageRoute
from healthmesh.web.session import Caller, read_form, signed_in_caller

__all__ = ["router"]

router = APIRouter(prefix="/web/steward", route_class=PageRoute, include_in_schema=False)
ROLES = ("steward", "admin")
PAGE_SIZE = 50
_TASK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACTOR = re.compile(r"^[^\s]{1,256}$")
_ACTION = re.compile(r"^[a-z][a-z0-9$-]{0,63}$")
_PATIENT = re.compile(r"^(Patient/)?[A-Za-z0-9\-.]{1,64}$")


def _steward(request: Request) -> tuple[Caller, Node]:
    return signed_in_caller(request, *ROLES), request.app.state.node


def _network(node: Node) -> Path | None:
    folder = node.folder / "network"
    return folder if folder.is_dir() else None


@router.get("")
def home(request: Request) -> Response:
    _, node = _steward(request)
    folder = _network(node)
    pending = _pending(folder) if folder else []
    return html_page(request, "steward/home.html", pending=len(pending),
                     agreements=len(_agreements(node)), in_network=folder is not None)


# -- release review --------------------------------------------------------------------

def _pending(folder: Path) -> list[dict[str, Any]]:
    log = TaskLog(folder / "tasks.sqlite")
    try:
        return log.pending_review()
    finally:
        log.close()


@router.get("/releases")
def releases(request: Request) -> Response:
    _, node = _steward(request)
    folder = _network(node)
    items = [_shown(item) for item in (_pending(folder) if folder else [])]
    return html_page(request, "steward/releases.html", items=items,
                     in_network=folder is not None,
                     decided=request.query_params.get("decided", "")[:80])


def _shown(item: dict[str, Any]) -> dict[str, Any]:
    """A held result as the steward reviews it: exactly the rows that would leave."""
    result = item.get("result") or {}
    rows = result.get("rows") or []
    columns = list(dict.fromkeys(k for row in rows for k in row))
    received = datetime.fromtimestamp(item["received"] or 0, UTC)
    return {**item, "received_text": received.strftime("%Y-%m-%d %H:%M UTC"),
            "columns": columns, "rows": rows, "notes": result.get("notes") or [],
            "epsilon": result.get("epsilon_spent")}


@router.post("/releases/{task_id}")
async def decide(request: Request, task_id: str) -> Response:
    found, node = _steward(request)
    form = await read_form(request)
    folder = _network(node)
    if folder is None or not _TASK.match(task_id):
        raise PageError("There is no such task at this node.", 404)
    decision = form.get("decision", [""])[0]
    reason = form.get("reason", [""])[0].strip()
    if decision not in ("approve", "reject"):
        raise PageError("Choose approve or reject.", 422)
    if not 3 <= len(reason) <= 500:
        raise PageError("Give a reason for the decision (3 to 500 characters).", 422)
    approve = decision == "approve"
    log = TaskLog(folder / "tasks.sqlite")
    try:
        log.decide(task_id, approve, found.name)
    finally:
        log.close()
    node.audit.append(AuditRecord(
        actor=found.requester.agent or found.name, action="release-review",
        organisation=found.requester.organisation, purpose=found.requester.purpose,
        decision="permit" if approve else "deny",
        reason=f"steward {'approved' if approve else 'withheld'} task {task_id}: {reason}",
        detail={"task": task_id, "reason": reason, "via": "web"}))
    return redirect(request, f"/web/steward/releases?decided={task_id}")


# -- agreements and privacy budget -------------------------------------------------------

def _agreements(node: Node) -> list[dict[str, Any]]:
    folder = _network(node)
    if folder is None:
        return []
    out = []
    ledger = PrivacyLedger(folder / "privacy-ledger.sqlite")
    try:
        for path in sorted((folder / "agreements").glob("*.json")):
            try:
                agreement = load_agreement(path)
            except AgreementError as exc:
                out.append({"id": path.stem, "error": str(exc)})
                continue
            total = agreement.disclosure.get("total_epsilon")
            spent = ledger.spent(agreement.id)
            out.append({"agreement": agreement, "id": agreement.id, "error": None,
                        "in_force": agreement.in_force(), "total": total, "spent": spent,
                        "left": None if total is None else max(total - spent, 0.0),
                        "unsigned": [p for p in agreement.parties()
                                     if p not in agreement.signatures]})
    finally:
        ledger.close()
    return out


@router.get("/agreements")
def agreements(request: Request) -> Response:
    _, node = _steward(request)
    return html_page(request, "steward/agreements.html", agreements=_agreements(node),
                     in_network=_network(node) is not None)


# -- audit log -------------------------------------------------------------------------

def _filters(request: Request) -> dict[str, Any]:
    """The audit filters of the query string, validated (raises PageError)."""
    q = request.query_params
    out: dict[str, Any] = {}
    for name, pattern in (("actor", _ACTOR), ("action", _ACTION), ("patient", _PATIENT)):
        value = q.get(name, "").strip()
        if value:
            if not pattern.match(value):
                raise PageError(f"The {name} filter is not valid.", 400)
            out[name] = value
    for name in ("since", "until"):
        value = q.get(name, "").strip()
        if value:
            try:
                day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise PageError(f"{name} must be a date like 2026-01-31.", 400) from None
            out[name] = value
            micros = int(day.timestamp() * 1_000_000)
            out[f"{name}_us"] = micros if name == "since" else micros + 86_400_000_000
    return out


@router.get("/audit")
def audit(request: Request) -> Response:
    found, node = _steward(request)
    filters = _filters(request)
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise PageError("page must be a whole number from 1.", 400)
    page = int(raw)
    entries = node.audit.entries(
        patient=filters.get("patient"), actor=filters.get("actor"),
        action=filters.get("action"), since=filters.get("since_us"),
        until=filters.get("until_us"), limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    chain = node.audit.verify()
    shown = {k: v for k, v in filters.items() if not k.endswith("_us")}
    node.audit.append(AuditRecord(
        actor=found.requester.agent or found.name, action="audit-read",
        organisation=found.requester.organisation, purpose=found.requester.purpose,
        decision="permit", rule=f"role:{found.role}", detail={"filters": shown,
                                                              "page": page}))
    rows = [_entry(e) for e in entries[:PAGE_SIZE]]
    return html_page(request, "steward/audit.html", rows=rows, filters=shown, page=page,
                     more=len(entries) > PAGE_SIZE, chain=chain)


def _entry(entry: Any) -> dict[str, Any]:
    record = entry.record
    when = datetime.fromtimestamp(record.time / 1_000_000, UTC)
    return {"position": entry.position, "when": when.strftime("%Y-%m-%d %H:%M:%S"),
            "actor": record.actor, "organisation": record.organisation or "",
            "action": record.action, "purpose": record.purpose or "",
            "decision": record.decision, "patients": ", ".join(record.patients[:5]),
            "reason": record.reason or record.rule or ""}


# -- data quality ----------------------------------------------------------------------

@router.get("/quality")
def quality(request: Request) -> Response:
    found, node = _steward(request)
    repo = node.gate.for_request(found.requester)
    return html_page(request, "steward/quality.html", rows=quality_summary(repo),
                     rejects=reject_counts(node.folder))
