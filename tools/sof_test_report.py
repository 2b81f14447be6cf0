"""Write healthmesh's SQL on FHIR v2 test report (the suite's ``test_report`` format).

    python tools/sof_test_report.py [SUITE_TESTS_DIR] [--out build/sof-test-report.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from healthmesh.views.conformance import test_report

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", type=Path,
                        default=ROOT.parent / "shared/conformance/sql-on-fhir-v2/tests")
    parser.add_argument("--out", type=Path, default=ROOT / "build/sof-test-report.json")
    args = parser.parse_args()
    report = test_report(args.suite)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tests = [t for f in report.values() for t in f["tests"]]
    passed = sum(t["result"]["passed"] for t in tests)
    print(f"{passed} of {len(tests)} tests passed in {len(report)} files -> {args.out}")


if __name__ == "__main__":
    main()
