"""Do healthmesh and clkhash produce identical CLKs? Prints one line per case and a verdict.

clkhash cannot live in healthmesh's environment (it pins cryptography<41 and bitarray<3),
so it runs in its own virtual environment (default ``bench/.venv-clkhash``; ``--make-venv``
creates it with ``pip install clkhash==0.18.3 anonlink==0.15.3``, which needs PyPI). For
each case — the shipped schema and variants covering doubleHash (with and without
``prevent_singularity``), bitsPerToken, positional n-grams, numeric and exact comparisons,
XOR folding, HKDF-SHA512 with salt/info/keySize and missing-value sentinels — both encode
the same records (synthetic Patients plus edge cases) under the same secret and the
base64 CLKs are compared byte for byte.

Usage: .venv/bin/python tools/clkhash_compat.py [--venv DIR] [--make-venv] [--patients N]
Exit status 0 when every case matches, 1 otherwise, 2 when clkhash is not available.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from healthmesh.linkage import ClkEncoder, default_schema, parse_schema  # noqa: E402
from healthmesh.linkage.features import patient_record  # noqa: E402

_CLKHASH_SIDE = r"""
import base64, json, sys
from clkhash import clk, schema as schema_mod
job = json.load(sys.stdin)
s = schema_mod.from_json_dict(job["schema"])
clks = clk.generate_clks(job["records"], s, job["secret"].encode("latin-1"), validate=True)
json.dump([base64.b64encode(c.tobytes()).decode() for c in clks], sys.stdout)
"""


def _variants() -> dict[str, dict[str, Any]]:
    base = default_schema().document
    out = {"shipped schema (blakeHash, bitsPerFeature)": base}
    double = copy.deepcopy(base)
    for i, feature in enumerate(double["features"]):
        feature["hashing"]["hash"] = {"type": "doubleHash", "prevent_singularity": i % 2 == 0}
        feature["hashing"]["strategy"] = {"bitsPerToken": 7 + i}
    out["doubleHash, bitsPerToken, prevent_singularity on/off"] = double
    folded = copy.deepcopy(base)
    folded["clkConfig"] = {"l": 512, "xor_folds": 1, "kdf": {
        "type": "HKDF", "hash": "SHA512", "salt": base64.b64encode(b"s" * 16).decode(),
        "info": base64.b64encode(b"compat").decode(), "keySize": 32}}
    for feature in folded["features"]:
        if feature["identifier"] == "name":
            feature["hashing"]["comparison"] = {"type": "ngram", "n": 3, "positional": True}
        if feature["identifier"] == "birth_year":
            feature["hashing"]["comparison"] = {"type": "numeric", "thresholdDistance": 2,
                                                "resolution": 3}
    out["XOR fold, HKDF-SHA512 salt/info/keySize, positional 3-grams, numeric"] = folded
    return out


def _records(identifiers: list[str], patients: int) -> list[list[str]]:
    from healthmesh.synth import generate

    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder) / "s", patients=patients, sites=["hospital", "insurer"], seed=3)
        rows = []
        for site in ("hospital", "insurer"):
            for line in (Path(folder) / "s" / site / "Patient.ndjson").read_text().splitlines():
                rows.append(patient_record(json.loads(line), identifiers))
    blank = [""] * len(identifiers)
    return [*rows, blank]


def _healthmesh(document: dict[str, Any], secret: bytes, records: list[list[str]]) -> list[str]:
    encoder = ClkEncoder(parse_schema(document), secret)
    return [base64.b64encode(encoder.encode(r)).decode() for r in records]


def _clkhash(python: Path, document: dict[str, Any], secret: bytes,
             records: list[list[str]]) -> list[str]:
    job = json.dumps({"schema": document, "secret": secret.decode("latin-1"),
                      "records": records})
    done = subprocess.run([str(python), "-c", _CLKHASH_SIDE], input=job, text=True,
                          capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout)


def _make_venv(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "clkhash==0.18.3",
                    "anonlink==0.15.3"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=REPO / "bench" / ".venv-clkhash")
    parser.add_argument("--make-venv", action="store_true")
    parser.add_argument("--patients", type=int, default=150)
    args = parser.parse_args()
    if args.make_venv and not (args.venv / "bin" / "python").exists():
        _make_venv(args.venv)
    python = args.venv / "bin" / "python"
    if not python.exists():
        print(f"clkhash environment {args.venv} not found; run with --make-venv")
        return 2
    secret = bytes(range(32))
    all_match = True
    for name, document in _variants().items():
        identifiers = [f["identifier"] for f in document["features"]]
        records = _records(identifiers, args.patients)
        ours = _healthmesh(document, secret, records)
        theirs = _clkhash(python, document, secret, records)
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        all_match &= same == len(records)
        print(f"{'MATCH' if same == len(records) else 'DIFFER'}  {same}/{len(records)} CLKs "
              f"identical  {name}")
    print("healthmesh and clkhash produce identical CLKs" if all_match
          else "healthmesh and clkhash DIFFER")
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
