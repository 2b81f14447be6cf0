"""FHIR de-identification throughput next to a plain copy measured in the same run.

The baseline is the floor of any NDJSON-to-NDJSON transform: each line parsed with
``orjson`` and written back (``orjson.dumps``). Then, on the same lines, each profile
(``safe-harbor``, ``date-shift``, ``pseudonymize``) applied with
:class:`healthmesh.privacy.deid.Deidentifier`, and the same with FHIR validation of the
output as ``healthmesh deid`` does. Reported in resources per second and as "x copy"
(how many times the copy's time, the median over ``--repeat`` rounds that interleave
every step, each ratio to the copy of its own round). Times are the process's CPU
time, not wall time, so other processes' load on a shared machine distorts them less;
ratios are what matter.

Without ``--data`` a synthetic population of ``--patients`` people is generated first.

    python bench/deid.py [--data DIR | --patients 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.fhir.validation import validate  # noqa: E402
from healthmesh.privacy.deid import Deidentifier, DeidKey  # noqa: E402


def _lines(folder: Path) -> list[bytes]:
    lines = []
    for path in sorted(folder.rglob("*.ndjson")):
        if "truth" not in path.parts:
            lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return lines


def _best(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.process_time()
        count = run()
        best = min(best, time.process_time() - start)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from healthmesh.synth import generate

            data = Path(tmp) / "synth"
            generate(data, patients=args.patients, seed=1)
        lines = _lines(data)
    key = DeidKey(bytes(range(32)))
    sink: list[bytes] = []

    def copy() -> int:
        sink.clear()
        sink.extend(orjson.dumps(orjson.loads(line)) for line in lines)
        return len(sink)

    def transform(deid: Deidentifier, check: bool) -> Callable[[], int]:
        def run() -> int:
            sink.clear()
            for line in lines:
                out = deid.apply(orjson.loads(line))
                if out is not None and (not check or not validate(out)):
                    sink.append(orjson.dumps(out))
            return len(sink)
        return run

    variants: list[tuple[str, Callable[[], int]]] = [("orjson read + write (copy)", copy)]
    for profile in ("safe-harbor", "date-shift", "pseudonymize"):
        deid = Deidentifier(profile, key)
        variants.append((profile, transform(deid, False)))
        variants.append((profile + " + validate", transform(deid, True)))
    # Rounds interleave every variant, and each ratio is to the copy of the same round,
    # so that load from other processes shifts both sides of a ratio alike.
    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, run in variants:
            took, counts[name] = _best(run, 1)
            seconds[name].append(took)
    copies = seconds[variants[0][0]]
    print(f"{len(lines)} resources from {data}, {args.repeat} rounds")
    print(f"{'step':<36}{'resources/s':>14}{'x copy':>10}")
    for name, _ in variants:
        ratios = sorted(t / c for t, c in zip(seconds[name], copies, strict=True))
        rate = counts[name] / min(seconds[name])
        print(f"{name:<36}{rate:>14,.0f}{statistics.median(ratios):>10.1f}")

if __name__ == "__main__":
    main()
