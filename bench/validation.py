"""Benchmark: FHIR validation speed on the Synthea resources, next to ``orjson.loads``.

Every resource of the Synthea transaction Bundles in ``../shared/data/synthea`` is
serialised once; the benchmark then alternates rounds of ``orjson.loads`` over those JSON
texts (the baseline) and rounds of ``Validator.validate`` over the parsed resources, until
validation has done ``--seconds`` of work. It prints resources per second, by the
thread's CPU time (median and best round; other processes on a shared machine barely
move it) and by the wall clock (median), and the validator/loads ratio. Each validation
round starts with the validator's caches of valid values emptied, so that repeating the
same resources does not flatter it; the first pass, which also compiles the fast path,
is reported on its own. Run from the repository root::

    python bench/validation.py [--seconds 2.5] [--data ../shared/data/synthea]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.fhir import validation  # noqa: E402
from healthmesh.fhir.validation import Validator  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "synthea"


def load_resources(data: Path) -> list[dict[str, Any]]:
    """Every entry resource of every Bundle file under ``data``."""
    resources = []
    for path in sorted(data.rglob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        resources += [entry["resource"] for entry in bundle.get("entry", [])]
    return resources


def timed_round(work: Callable[[], None], count: int) -> tuple[float, float]:
    """Resources per second of one call of ``work``: by CPU time and by wall-clock time."""
    cpu, wall = time.thread_time(), time.perf_counter()
    work()
    return count / (time.thread_time() - cpu), count / (time.perf_counter() - wall)


def run(data: Path, seconds: float) -> dict[str, Any]:
    """Measure; return the rates."""
    resources = load_resources(data)
    texts = [orjson.dumps(r) for r in resources]
    validator = Validator()

    def parse() -> None:
        for text in texts:
            orjson.loads(text)

    def check() -> None:
        validation._clear_caches()  # no help from values remembered in earlier rounds
        for resource in resources:
            if validator.validate(resource, allow_conditional_references=True):
                raise SystemExit(f"unexpected issues in {resource.get('id')}")

    first = timed_round(check, len(resources))
    rates: dict[str, list[tuple[float, float]]] = {"loads": [], "validate": []}
    while sum(len(resources) / wall for _, wall in rates["validate"]) < seconds:
        for name, work in (("loads", parse), ("validate", check)):
            rates[name].append(timed_round(work, len(resources)))
    return {"count": len(resources), "first": first, "rates": rates}


def report(result: dict[str, Any]) -> None:
    """Print the rates: CPU time (one core, whatever else runs) first, wall clock second."""
    rates = result["rates"]
    print(f"{result['count']} Synthea resources, {len(rates['validate'])} rounds each")
    print(f"{'resources/s':<24}{'CPU median':>12}{'CPU best':>12}{'wall median':>13}")
    median: dict[str, float] = {}
    for name, label in (("loads", "orjson.loads (baseline)"), ("validate", "healthmesh validate")):
        cpu = [c for c, _ in rates[name]]
        wall = statistics.median(w for _, w in rates[name])
        median[name] = statistics.median(cpu)
        print(f"{label:<24}{median[name]:>12,.0f}{max(cpu):>12,.0f}{wall:>13,.0f}")
    first_cpu, first_wall = result["first"]
    print(f"{'first validation pass':<24}{first_cpu:>12,.0f}{'':>12}{first_wall:>13,.0f}")
    print(f"validate / loads (CPU medians): {median['validate'] / median['loads']:.2f}")
    both = 1 / (1 / median["validate"] + 1 / median["loads"])
    print(f"loads + validate on one core: {both:,.0f} resources/s")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="work per measurement")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no Synthea data in {args.data}", file=sys.stderr)
        return 2
    report(run(args.data, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
