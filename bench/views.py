"""SQL on FHIR v2 speed: rows/s of healthmesh's compiled views vs a hand-written loop.

Over Synthea-shaped NDJSON (see bench/ingest.py), in the same run:

* Patient view (id, gender, birth date, family name);
* Observation view with ``forEach`` over ``code.coding`` (id, patient, system, code,
  effective time, numeric value and unit);

each by ``healthmesh.views`` (compiled once) and by a hand-written Python loop producing
the same rows (checked equal), over the resources of that type already parsed (the engine
itself), and once more including ``orjson`` parsing of those resources' NDJSON lines.

    python bench/views.py [--resources 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import build_dataset  # noqa: E402

from healthmesh.views import compile_view  # noqa: E402

PATIENT_VIEW = {"resource": "Patient", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()"},
    {"name": "gender", "path": "gender"},
    {"name": "birth_date", "path": "birthDate"},
    {"name": "family", "path": "name.first().family"}]}]}
OBSERVATION_VIEW = {"resource": "Observation", "select": [
    {"column": [{"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "effective", "path": "effective.ofType(dateTime)"},
                {"name": "value", "path": "value.ofType(Quantity).value"},
                {"name": "unit", "path": "value.ofType(Quantity).code"}]},
    {"forEach": "code.coding", "column": [{"name": "system", "path": "system"},
                                          {"name": "code", "path": "code"}]}]}


def hand_patient(res: dict[str, Any]) -> list[dict[str, Any]]:
    names = res.get("name") or [{}]
    return [{"id": res["id"], "gender": res.get("gender"), "birth_date": res.get("birthDate"),
             "family": names[0].get("family")}]


def hand_observation(res: dict[str, Any]) -> list[dict[str, Any]]:
    subject = (res.get("subject") or {}).get("reference", "")
    patient = subject[8:] if subject.startswith("Patient/") else None
    quantity = res.get("valueQuantity") or {}
    base = {"id": res["id"], "patient": patient, "effective": res.get("effectiveDateTime"),
            "value": quantity.get("value"), "unit": quantity.get("code")}
    return [{**base, "system": c.get("system"), "code": c.get("code")}
            for c in res["code"].get("coding", [])]


def run(lines: list[bytes], rtype: str, view: dict[str, Any], hand: Any) -> None:
    marker = f'"resourceType":"{rtype}"'.encode()
    mine = [line for line in lines if marker in line]
    resources = [orjson.loads(line) for line in mine]
    compiled = compile_view(view)
    for label, source in (("in memory", lambda: resources),
                          ("with NDJSON parsing", lambda: map(orjson.loads, mine))):
        start = time.perf_counter()
        ours = list(compiled.rows(source()))
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = [row for res in source() for row in hand(res)]
        hand_s = time.perf_counter() - start
        assert ours == theirs, "the hand-written loop must produce the same rows"
        n = len(ours)
        print(f"{rtype:12s} {label:20s} {n:>9,} rows  healthmesh {n / ours_s:>10,.0f} rows/s  "
              f"hand-written {n / hand_s:>10,.0f} rows/s  ratio {hand_s / ours_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.ndjson"
        build_dataset(data, args.resources)
        lines = data.read_bytes().splitlines()
    print(f"{len(lines):,} resources in the data set")
    run(lines, "Patient", PATIENT_VIEW, hand_patient)
    run(lines, "Observation", OBSERVATION_VIEW, hand_observation)


if __name__ == "__main__":
    main()
