"""A node answering a federated task: every check the node makes, in order.

1. **Who asks** — the task must carry the requester's own signature, verified with the
   requester's membership certificate against the node's trust anchor and revocation
   list (the hub cannot forge or alter a task); a task id is answered once.
2. **Under which agreement** — the node's own signed copy (``DIR/network/agreements``):
   in force, signed by every party, this node a provider, the requester, purpose,
   algorithm, tables and strata all allowed (:func:`check_task`).
3. **Vetted code only** — the algorithm is one shipped with healthmesh; its parameters
   are validated; repeated near-identical questions are limited (differencing attacks).
4. **Consent** — the egress gate names the patients whose consent allows this purpose
   and requester, and the records of per-record consents to leave out; the algorithm
   reads only those (:meth:`GuardedRepository.population`).
5. **Disclosure control** — DP noise (charged to the agreement's privacy budget, which
   refuses once spent), small-cell suppression with complementary suppression, rounding.
6. **Release** — audited through the gate, signed by the node, and sent — or held for a
   data steward when the node or the agreement asks for release review.

Every answer (ok, refused, error, review) is kept in ``DIR/network/tasks.sqlite``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from healthmesh.algorithms import ALGORITHMS, AlgorithmError
from healthmesh.cohorts import CohortError
from healthmesh.errors import HealthmeshError
from healthmesh.gate.requester import Requester
from healthmesh.network.agreements import (
    Agreement,
    AgreementError,
    TaskRefused,
    check_task,
    load_agreement,
)
from healthmesh.network.members import (
    Identity,
    MemberDirectory,
    result_digest,
    verify_agreement_signatures,
)
from healthmesh.network.tasklog import Answer, TaskLog
from healthmesh.node import Node
from healthmesh.privacy import (
    BudgetExhausted,
    DisclosureRules,
    PrivacyLedger,
    QueryLimiter,
    QueryLimitReached,
)
from healthmesh.security import unverified_sender, verify_payload

__all__ = ["Answer", "TaskRunner"]

log = logging.getLogger("healthmesh.tasks")
CLOCK_SKEW = 300.0
REFUSALS = (TaskRefused, AgreementError, AlgorithmError, CohortError, BudgetExhausted,
            QueryLimitReached)


class TaskRunner:
    """Checks and runs tasks for one node (see the module docstring)."""

    def __init__(self, node: Node, identity: Identity,
                 directory: Callable[[], MemberDirectory]) -> None:
        from healthmesh.views.tables import AnalyticTables

        self.node = node
        self.identity = identity
        self.directory = directory
        folder = node.folder / "network"
        self.log = TaskLog(folder / "tasks.sqlite")
        self.ledger = PrivacyLedger(folder / "privacy-ledger.sqlite")
        self.limiter = QueryLimiter(folder / "privacy-ledger.sqlite")
        self.tables = AnalyticTables(node.folder, node.store)
        self.agreements = folder / "agreements"
        self.lock = threading.Lock()  # one task (or warm-up) at a time uses the tables

    def close(self) -> None:
        self.log.close()
        self.ledger.close()
        self.limiter.close()

    def unsent(self) -> Iterator[tuple[str, Answer]]:
        return self.log.unsent()

    def mark_sent(self, task_id: str) -> None:
        self.log.mark_sent(task_id)

    # -- one task ------------------------------------------------------------------------

    def warm(self) -> None:
        """Prepare what the first task would otherwise wait for: bring the analytic tables
        up to date, and decide the consented population of every (requester, purpose) of
        the agreements this node signed (per-record consent decisions are the slow part)."""
        with self.lock:
            self.tables.refresh()
        for path in sorted(self.agreements.glob("*.json")):
            try:
                agreement = load_agreement(path)
            except AgreementError as exc:
                log.warning("warm-up skips %s: %s", path.name, exc)
                continue
            types = self._resource_types(set(agreement.tables) | {"patient"})
            for purpose in agreement.purposes:
                with self.lock:
                    repo = self.node.gate.for_request(Requester(agreement.requester, purpose))
                    repo.population(types)

    def run(self, task_id: str, token: str) -> Answer:
        """Check, run and answer one task (never raises for a bad task)."""
        with self.lock:
            return self._run(task_id, token)

    def _run(self, task_id: str, token: str) -> Answer:
        done = self.log.get(task_id)
        if done is not None:
            return done
        task: dict[str, Any] | None = None
        try:
            directory = self.directory()
            task = self._signed(token, directory)  # from here on, refusals are audited
            self._check(task_id, task)
            answer = self._answer(task, directory)
        except REFUSALS as exc:
            answer = Answer("refused", str(exc))
            self._audit_refusal(task_id, task, str(exc))
        except HealthmeshError as exc:
            answer = Answer("refused", f"task not accepted: {exc}")
            self._audit_refusal(task_id, task, str(exc))
        except Exception:
            log.exception("task %s failed", task_id)
            answer = Answer("error", "the node failed to compute this task (see its log)")
        self.log.put(task_id, task, answer, token)
        return answer

    def _signed(self, token: str, directory: MemberDirectory) -> dict[str, Any]:
        """The task's claims, once the signature of the member who signed it verifies."""
        try:
            requester = unverified_sender(token)
        except HealthmeshError:
            raise TaskRefused("the task is not a signed task") from None
        return verify_payload(token, directory.public_key(requester), sender=requester)

    def _check(self, task_id: str, task: dict[str, Any]) -> None:
        if task.get("id") != task_id or task.get("requester") != task.get("iss"):
            raise TaskRefused("the task's id or requester does not match its signature")
        now = time.time()
        if not isinstance(task.get("deadline"), int | float) or task["deadline"] < now:
            raise TaskRefused("the task's deadline has passed")
        created = task.get("created")
        if not isinstance(created, int | float) or abs(created - now) > CLOCK_SKEW + 86400:
            raise TaskRefused("the task's creation time is not plausible")
        if not isinstance(task.get("params"), dict):
            raise TaskRefused("the task has no parameters object")

    def _agreement(self, task: dict[str, Any], directory: MemberDirectory) -> Agreement:
        name = str(task.get("agreement", ""))
        path = self.agreements / f"{name}.json"
        if not name.replace("-", "").isalnum() or not path.exists():
            raise TaskRefused(f"this node has not signed an agreement {name[:64]!r}")
        agreement = load_agreement(path)
        verify_agreement_signatures(agreement, directory.public_key)
        return agreement

    def _answer(self, task: dict[str, Any], directory: MemberDirectory) -> Answer:
        agreement = self._agreement(task, directory)
        algorithm = ALGORITHMS.get(task.get("algorithm", ""))
        if algorithm is None:
            raise TaskRefused(f"unknown algorithm {task.get('algorithm')!r}")
        params = algorithm.check(task["params"])
        check_task(agreement, task, site=self.identity.org,
                   tables_used=algorithm.tables_used(params),
                   strata_used=algorithm.strata_used(params))
        rules = DisclosureRules.from_dict(agreement.disclosure)
        fingerprint = self.limiter.fingerprint(algorithm.name, task["params"])
        self.limiter.check_and_record(agreement.id, task["requester"], fingerprint,
                                      max_runs=rules.max_repeats, window_days=rules.window_days)
        repo = self.node.gate.for_request(Requester(task["requester"], task["purpose"]))
        population = repo.population(self._resource_types(algorithm.tables_used(params)))
        local = self._run_local(algorithm, params, population)
        released = algorithm.disclose(local, rules)
        if released.epsilon_spent:  # charged before anything leaves; refuses once spent
            self.ledger.charge(agreement.id, task["id"], released.epsilon_spent,
                               float(rules.total_epsilon or 0.0), fingerprint)
        result = {"algorithm": algorithm.name, "version": algorithm.version,
                  "columns": list(local.columns), "rows": released.rows,
                  "epsilon_spent": released.epsilon_spent, "notes": released.notes}
        review = "manual" in (agreement.release_review, self.node.settings.release_review)
        repo.release("federated-release", population=population, detail={
            "task": task["id"], "agreement": agreement.id, "algorithm": algorithm.name,
            "rows": len(released.rows), "epsilon": released.epsilon_spent,
            "held_for_review": review})
        signature = self.identity.sign({"task": task["id"], "digest": result_digest(result)})
        return Answer("review" if review else "ok",
                      "held for the data steward's release review" if review else None,
                      result, signature)

    def _resource_types(self, tables: set[str]) -> set[str]:
        """The FHIR resource types that feed ``tables`` (their views' resources)."""
        defined, _ = self.tables.definitions()
        return {view.resource for name in tables if name in defined
                for view in defined[name].views}

    def _run_local(self, algorithm: Any, params: dict[str, Any], population: Any) -> Any:
        from healthmesh.cohorts import load_consent_scope

        self.tables.refresh()
        con = self.tables.connect(read_only=True)
        try:
            load_consent_scope(con, population.allowed, population.denied,
                               everyone=population.everyone)
            return algorithm.run_local(con, params, site=self.identity.org)
        finally:
            con.close()

    def _audit_refusal(self, task_id: str, task: dict[str, Any] | None, reason: str) -> None:
        """Audit a refusal under the member whose signature verified (none: nothing
        trustworthy to audit under)."""
        if task is None:
            return
        purpose = task.get("purpose")
        repo = self.node.gate.for_request(Requester(
            str(task["iss"]), purpose if isinstance(purpose, str) and purpose.isalnum()
            and len(purpose) <= 32 else None))
        repo.refuse("federated-refuse", reason, {"task": task_id,
                                                  "agreement": str(task.get("agreement"))[:64]})

