"""Generate ``src/healthmesh/fhir/data/r4-summary.json`` from the R4 StructureDefinitions.

For each resource type, the top-level JSON property names whose element is
marked ``isSummary`` (choice elements expanded to every allowed type), used
for ``_summary=true``. Run: ``python tools/gen_summary_elements.py [DEFINITIONS_DIR]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/healthmesh/fhir/data/r4-summary.json"


def summary_elements(definitions: Path) -> dict[str, list[str]]:
    bundle = json.loads((definitions / "profiles-resources.json").read_text())
    out: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("derivation") == "constraint" or sd.get("abstract"):
            continue
        names: list[str] = []
        for el in sd["snapshot"]["element"]:
            path = el["path"].split(".")
            if len(path) != 2 or not el.get("isSummary"):
                continue
            name = path[1]
            if name.endswith("[x]"):
                base = name[:-3]
                for t in el.get("type", []):
                    code = t["code"]
                    names.append(base + code[0].upper() + code[1:])
            else:
                names.append(name)
        out[sd["type"]] = sorted(set(names))
    return dict(sorted(out.items()))


def main() -> None:
    default = ROOT.parent / "shared/fhir-r4/definitions"
    definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary_elements(definitions), separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
