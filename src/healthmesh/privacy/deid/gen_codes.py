"""Generate ``data/hl7-codes.json.gz``: every code of the HL7 code systems (FHIR, v3, v2).

The walk keeps a ``Coding`` of an HL7 code system only when its code is one the code
system defines; this file lists them, taken from the official FHIR R4 definitions
(``valuesets.json``, ``v3-codesystems.json``, ``v2-tables.json``). The output is
deterministic (sorted, gzip without timestamp)::

    python -m healthmesh.privacy.deid.gen_codes [DEFINITIONS_DIR]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import orjson

OUT = Path(__file__).with_name("data") / "hl7-codes.json.gz"
DEFAULT_DEFINITIONS = Path(__file__).resolve().parents[5] / "shared" / "fhir-r4" / "definitions"
FILES = ("valuesets.json", "v3-codesystems.json", "v2-tables.json")


def _codes(concepts: list[dict[str, Any]], into: set[str]) -> None:
    for concept in concepts:
        into.add(concept["code"])
        _codes(concept.get("concept", []), into)


def code_systems(definitions: Path) -> dict[str, list[str]]:
    """url -> sorted codes of every CodeSystem with concepts in the definitions."""
    found: dict[str, set[str]] = {}
    for name in FILES:
        bundle = orjson.loads((definitions / name).read_bytes())
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "CodeSystem" and resource.get("concept"):
                _codes(resource["concept"], found.setdefault(resource["url"], set()))
    return {url: sorted(codes) for url, codes in sorted(found.items())}


def main(argv: list[str]) -> None:
    definitions = Path(argv[0]) if argv else DEFAULT_DEFINITIONS
    data = orjson.dumps(code_systems(definitions), option=orjson.OPT_SORT_KEYS)
    OUT.write_bytes(gzip.compress(data, mtime=0))
    print(f"wrote {OUT} ({len(data)} bytes of JSON)")


if __name__ == "__main__":
    main(sys.argv[1:])
