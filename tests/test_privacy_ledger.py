"""The privacy ledger (epsilon per agreement) and the repeated-query limiter."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import opendp.prelude as dp
import pytest
from opendp.mod import OpenDPException

from healthmesh.privacy import (
    LEDGER_FILE,
    BudgetExhausted,
    DisclosureError,
    LedgerError,
    PrivacyLedger,
    QueryLimiter,
    QueryLimitReached,
    fingerprint,
    laplace_scale,
)
from healthmesh.privacy.dp import laplace_measurement

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / LEDGER_FILE


@pytest.fixture
def ledger(path: Path):
    with PrivacyLedger(path) as opened:
        yield opened


@pytest.fixture
def limiter(path: Path):
    with QueryLimiter(path) as opened:
        yield opened


# -- budget -------------------------------------------------------------------------------


def test_charge_spends_and_reports_what_remains(ledger: PrivacyLedger) -> None:
    assert ledger.spent("agr-1") == 0.0
    assert ledger.charge("agr-1", "task-1", 0.25, 1.0, "fp-a") == pytest.approx(0.75)
    assert ledger.charge("agr-1", "task-2", 0.5, 1.0, "fp-b") == pytest.approx(0.25)
    assert ledger.spent("agr-1") == pytest.approx(0.75)
    assert ledger.remaining("agr-1", 1.0) == pytest.approx(0.25)
    assert ledger.remaining("agr-1") == pytest.approx(0.25)  # the recorded budget
    assert ledger.budget("agr-1") == 1.0
    assert ledger.spent("agr-2") == 0.0  # agreements are separate
    history = ledger.history("agr-1")
    assert [(s.task_id, s.epsilon, s.fingerprint) for s in history] == [
        ("task-1", 0.25, "fp-a"), ("task-2", 0.5, "fp-b")]
    assert all(s.at.tzinfo is not None for s in history)


def test_overspending_charge_is_refused_and_not_recorded(ledger: PrivacyLedger) -> None:
    ledger.charge("agr-1", "task-1", 0.75, 1.0)
    with pytest.raises(BudgetExhausted) as info:
        ledger.charge("agr-1", "task-2", 0.5, 1.0)
    message = str(info.value)
    assert "0.75" in message and "0.5" in message and "1" in message
    assert (info.value.spent, info.value.requested, info.value.total) == (0.75, 0.5, 1.0)
    assert ledger.spent("agr-1") == 0.75
    assert len(ledger.history("agr-1")) == 1


def test_budget_can_be_spent_exactly_despite_float_rounding(ledger: PrivacyLedger) -> None:
    for k in range(10):  # 0.1 ten times is not exactly 1.0 in naive float addition
        ledger.charge("agr-1", f"t{k}", 0.1, 1.0)
    assert ledger.remaining("agr-1", 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(BudgetExhausted):
        ledger.charge("agr-1", "t-extra", 1e-9, 1.0)


def test_same_task_is_charged_once(ledger: PrivacyLedger) -> None:
    first = ledger.charge("agr-1", "task-1", 0.4, 1.0, "fp")
    again = ledger.charge("agr-1", "task-1", 0.4, 1.0, "fp")
    assert first == again == pytest.approx(0.6)
    assert ledger.spent("agr-1") == pytest.approx(0.4)
    with pytest.raises(LedgerError, match="already charged"):
        ledger.charge("agr-1", "task-1", 0.1, 1.0, "fp")  # a reused id, not a retry


def test_ledger_survives_reopening(path: Path) -> None:
    with PrivacyLedger(path) as ledger:
        ledger.charge("agr-1", "task-1", 0.3, 1.0)
    with PrivacyLedger(path) as ledger:
        assert ledger.spent("agr-1") == pytest.approx(0.3)
        assert ledger.charge("agr-1", "task-1", 0.3, 1.0) == pytest.approx(0.7)  # idempotent
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_ledger_and_bad_amounts_are_errors(path: Path) -> None:
    ledger = PrivacyLedger(path)
    with pytest.raises(DisclosureError, match="non-negative"):
        ledger.charge("agr-1", "t", -0.1, 1.0)
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.spent("agr-1")
    with PrivacyLedger(path) as reopened, pytest.raises(LedgerError, match="no budget"):
        reopened.remaining("agr-unknown")


def test_accounting_agrees_with_opendp_compositor(ledger: PrivacyLedger) -> None:
    """OpenDP's in-memory compositor and our ledger allow and refuse the same queries."""
    context = dp.Context.compositor(
        data=[10, 20, 30],
        privacy_unit=dp.unit_of(l1=1, U=dp.i64),
        privacy_loss=dp.loss_of(epsilon=1.0),
        domain=dp.vector_domain(dp.atom_domain(T=dp.i64)),
    )
    for k, epsilon in enumerate([0.3, 0.3, 0.4]):
        context.query(epsilon=epsilon).laplace().release()
        left = ledger.charge("agr-1", f"t{k}", epsilon, 1.0)
        assert left == pytest.approx(context.remaining_privacy_loss(), abs=1e-12)
        # and our calibrated measurement certifies exactly what was charged
        assert laplace_measurement(laplace_scale(epsilon)).map(1) <= epsilon
    with pytest.raises(OpenDPException):
        context.query(epsilon=0.1).laplace().release()
    with pytest.raises(BudgetExhausted):
        ledger.charge("agr-1", "t3", 0.1, 1.0)


def _charge_in_process(path: str, worker: int, start: Any, results: Any) -> None:
    start.wait(30)
    granted = 0
    with PrivacyLedger(path) as ledger:
        for k in range(10):
            try:
                ledger.charge("agr-1", f"w{worker}-t{k}", 0.1, 2.0, "fp")
                granted += 1
            except BudgetExhausted:
                pass
    results.put(granted)


def test_concurrent_processes_never_overspend(path: Path) -> None:
    PrivacyLedger(path).close()  # create the file once; the race is on charging
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_charge_in_process, args=(str(path), w, start, results))
               for w in range(4)]
    for process in workers:
        process.start()
    start.set()
    granted = [results.get(timeout=60) for _ in workers]
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sum(granted) == 20  # 40 attempts of 0.1 against 2.0
    with PrivacyLedger(path) as ledger:
        assert ledger.spent("agr-1") == pytest.approx(2.0)
        assert ledger.spent("agr-1") <= 2.0 + 1e-12


# -- fingerprints -------------------------------------------------------------------------


COHORT = {"cohort": {"conditions": ["E11.9", "I10"], "age": {"min": 40}},
          "strata": ["sex", "age_band"], "title": "Diabetes by sex"}


def test_fingerprint_ignores_presentation_and_order() -> None:
    base = fingerprint("count", COHORT, presentation_keys={"title"})
    variants = [
        {"strata": ["age_band", "sex"], "cohort": {"age": {"min": 40.0},
                                                    "conditions": ["I10", " E11.9", "I10"]}},
        {**COHORT, "title": "Another title"},
        {**COHORT, "cohort": {**COHORT["cohort"], "title": "nested label"}},
    ]
    for params in variants:
        assert fingerprint("count", params, presentation_keys=["title"]) == base


def test_fingerprint_separates_queries_that_differ_in_substance() -> None:
    base = fingerprint("count", COHORT)
    assert fingerprint("mean", COHORT) != base
    other_code = {**COHORT, "cohort": {**COHORT["cohort"], "conditions": ["E11.9"]}}
    older = {**COHORT, "cohort": {**COHORT["cohort"], "age": {"min": 41}}}
    assert len({base, fingerprint("count", other_code), fingerprint("count", older)}) == 3
    assert QueryLimiter.fingerprint("count", COHORT) == base


# -- repeated-query limit -----------------------------------------------------------------


def test_query_locks_after_max_runs_and_unlocks_when_the_first_leaves(
    limiter: QueryLimiter,
) -> None:
    fp = fingerprint("count", COHORT)
    left = [limiter.check_and_record("agr-1", "Org/r", fp, now=T0 + timedelta(hours=k))
            for k in range(7)]
    assert left == [6, 5, 4, 3, 2, 1, 0]
    with pytest.raises(QueryLimitReached) as info:
        limiter.check_and_record("agr-1", "Org/r", fp, now=T0 + timedelta(days=3))
    unlock = T0 + timedelta(days=30)
    assert info.value.unlocks_at == unlock
    assert unlock.isoformat(timespec="seconds") in str(info.value)
    assert len(limiter.runs("agr-1", "Org/r", fp)) == 7  # the refusal is not a run
    # another requester, agreement or query is counted separately
    assert limiter.check_and_record("agr-1", "Org/other", fp, now=T0) == 6
    assert limiter.check_and_record("agr-2", "Org/r", fp, now=T0) == 6
    with pytest.raises(QueryLimitReached):
        limiter.check_and_record("agr-1", "Org/r", fp, now=unlock - timedelta(microseconds=1))
    assert limiter.check_and_record("agr-1", "Org/r", fp, now=unlock) == 0


def test_limit_and_window_are_parameters(limiter: QueryLimiter) -> None:
    for k in range(2):
        limiter.check_and_record("a", "r", "fp", max_runs=2, window_days=1,
                                 now=T0 + timedelta(hours=k))
    with pytest.raises(QueryLimitReached) as info:
        limiter.check_and_record("a", "r", "fp", max_runs=2, window_days=1,
                                 now=T0 + timedelta(hours=5))
    assert info.value.unlocks_at == T0 + timedelta(days=1)
    naive = (T0 + timedelta(days=1)).replace(tzinfo=None)  # naive datetimes are UTC
    assert limiter.check_and_record("a", "r", "fp", max_runs=2, window_days=1, now=naive) == 0


def test_runs_survive_reopening_and_share_the_ledger_file(path: Path) -> None:
    with QueryLimiter(path) as limiter, PrivacyLedger(path) as ledger:
        for k in range(7):
            limiter.check_and_record("a", "r", "fp", now=T0 + timedelta(minutes=k))
        ledger.charge("a", "t", 0.5, 1.0)
    with QueryLimiter(path) as limiter, PrivacyLedger(path) as ledger:
        with pytest.raises(QueryLimitReached):
            limiter.check_and_record("a", "r", "fp", now=T0 + timedelta(days=1))
        assert ledger.spent("a") == 0.5


def test_concurrent_connections_never_exceed_the_limit(path: Path) -> None:
    limiters = [QueryLimiter(path), QueryLimiter(path)]
    outcomes: list[str] = []
    barrier = threading.Barrier(12)

    def run(n: int) -> None:
        barrier.wait()
        try:
            limiters[n % 2].check_and_record("a", "r", "fp", now=T0)
            outcomes.append("ran")
        except QueryLimitReached:
            outcomes.append("locked")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for limiter in limiters:
        limiter.close()
    assert sorted(outcomes) == ["locked"] * 5 + ["ran"] * 7


def test_unopenable_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot open"):
        PrivacyLedger(tmp_path / "missing-folder" / LEDGER_FILE)
