"""HL7 v2 intake speed: ORU^R01 (5 OBX each) converted and stored vs bare python-hl7 parsing.

Generates --messages distinct ORU^R01 results (one report and 5 observations each,
--patients patients), then measures in the same run, on the same messages:

* bare parse: ``hl7.parse`` of each message (python-hl7 alone, the baseline);
* parse + convert: healthmesh's reading and mapping to FHIR, no store;
* convert + store: :class:`Hl7Intake` into a fresh node, one transaction per
  message (what ``healthmesh ingest`` of .hl7 files does);
* MLLP: the same over a loopback socket to ``MllpServer`` (each ACK awaited before
  the next message; each commit fsynced before its ACK), on --mllp messages.

    python bench/hl7v2.py [--messages 20000] [--patients 2000] [--mllp 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

import hl7

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.hl7v2 import Hl7Intake, MllpServer, convert, parse_message, send  # noqa: E402
from healthmesh.node import init_node, open_node  # noqa: E402

TESTS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dl", "70-105"),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "0.6-1.3"),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "135-145"),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "3.5-5.1"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "12.0-16.0"),
]


def oru(n: int, patients: int) -> bytes:
    patient = n % patients
    day = 1 + n % 28
    segments = [
        f"MSH|^~\\&|LIS|CITYLAB^2.16.840.1.113883.19.9^ISO|HEALTHMESH|NODE|202403{day:02d}0930"
        f"+0100||ORU^R01^ORU_R01|BENCH{n:08d}|P|2.5.1",
        f"PID|1||MRN{patient:07d}^^^CITYHOSP^MR||Doe{patient}^Jane^Q||1970{1 + patient % 12:02d}15"
        f"|F|||{patient} Main St^^Springfield^IL^62701^USA^H",
        f"PV1|1|O|LAB^^^CITYHOSP||||9001^Welby^Marcus^^^Dr|||||||||||V{n:08d}^^^CITYHOSP^VN",
        f"ORC|RE|P{n:08d}^EHR|F{n:08d}^LIS",
        f"OBR|1|P{n:08d}^EHR|F{n:08d}^LIS|24323-8^Comprehensive metabolic panel^LN|||"
        f"202403{day:02d}0715+0100|||||||||||||||202403{day:02d}0930+0100|||F",
    ]
    for i, (code, name, unit, ref) in enumerate(TESTS, start=1):
        value = f"{50 + (n * 7 + i * 13) % 90}.{n % 10}"
        flag = "H" if float(value) > float(ref.split("-")[1]) else "N"
        segments.append(f"OBX|{i}|NM|{code}^{name}^LN||{value}|{unit}|{ref}|{flag}|||F|||"
                        f"202403{day:02d}0715+0100")
    return "\r".join(segments).encode()


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def bench_parse(messages: list[bytes]) -> float:
    started = time.perf_counter()
    for raw in messages:
        hl7.parse(raw.decode())
    return rate(len(messages), time.perf_counter() - started)


def bench_convert(messages: list[bytes]) -> float:
    started = time.perf_counter()
    for raw in messages:
        convert(parse_message(raw), raw, UTC)
    return rate(len(messages), time.perf_counter() - started)


def bench_store(messages: list[bytes], folder: Path) -> tuple[float, dict[str, int]]:
    node = open_node(init_node(folder))
    try:
        intake = Hl7Intake(node)
        started = time.perf_counter()
        for raw in messages:
            receipt = intake.receive(raw)
            if receipt.ack_code != "AA":
                raise SystemExit(f"not accepted: {receipt.reason}")
        seconds = time.perf_counter() - started
        return rate(len(messages), seconds), node.store.counts()
    finally:
        node.close()


def bench_mllp(messages: list[bytes], folder: Path) -> float:
    node = open_node(init_node(folder))
    server = MllpServer(node, port=0)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    bound: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        bound.append(loop.run_until_complete(server.start())[1])
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        started = time.perf_counter()
        acks = send("127.0.0.1", bound[0], messages)
        seconds = time.perf_counter() - started
        if not all(b"MSA|AA|" in a for a in acks):
            raise SystemExit("a message was not accepted over MLLP")
        return rate(len(messages), seconds)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--mllp", type=int, default=2000)
    args = parser.parse_args()
    messages = [oru(n, args.patients) for n in range(args.messages)]
    size = sum(map(len, messages)) / len(messages)
    print(f"{args.messages} ORU^R01 messages, 5 OBX each, {args.patients} patients, "
          f"{size:.0f} bytes on average")
    parsed = bench_parse(messages)
    converted = bench_convert(messages)
    with tempfile.TemporaryDirectory() as tmp:
        stored, counts = bench_store(messages, Path(tmp) / "node")
        mllp = bench_mllp([oru(10_000_000 + n, args.patients) for n in range(args.mllp)],
                          Path(tmp) / "mllp-node") if args.mllp else 0.0
    print(f"stored: {counts}")
    print(f"{'':34}{'msg/s':>10}{'x bare parse':>14}")
    for label, value in (("bare parse (python-hl7)", parsed),
                         ("parse + convert (healthmesh)", converted),
                         ("convert + store (1 tx/message)", stored),
                         (f"MLLP round trip, fsync ({args.mllp})", mllp)):
        print(f"{label:34}{value:>10.0f}{value / parsed:>14.2f}")


if __name__ == "__main__":
    main()
