"""The MLLP listener over a loopback socket: ACKs, dead letters, framing, limits, CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from healthmesh.hl7v2 import MllpServer, send
from healthmesh.node import Node
from tests.conftest import bearer, free_port, run_asgi, run_cli
from tests.test_hl7v2_messages import adt, message, msh, oru, pid, seg

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


class Listener:
    """An MllpServer on its own event loop thread, on a free loopback port."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.server = MllpServer(node, port=0)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.host, self.port = self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def listen(make_node: Callable[..., Node]) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(**settings: object) -> Listener:
        listener = Listener(make_node(**settings))
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def frame(data: bytes) -> bytes:
    return VT + data + FS + CR


def read_acks(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    buffer = b""
    acks: list[dict[str, Any]] = []
    while len(acks) < count:
        data = sock.recv(65536)
        assert data, "the server closed the connection before answering"
        buffer += data
        while FS + CR in buffer:
            block, buffer = buffer.split(FS + CR, 1)
            assert block.startswith(VT)
            acks.append(parse_ack(block[1:]))
    return acks


def parse_ack(data: bytes) -> dict[str, Any]:
    segments = {s[:3]: s.split("|") for s in data.decode().split("\r") if s}
    return {"MSH": segments["MSH"], "MSA": segments["MSA"], "ERR": segments.get("ERR")}


def dead_letters(node: Node) -> list[tuple[bytes, dict[str, Any]]]:
    folder = node.folder / "dead-letter"
    out = []
    for raw in sorted(folder.glob("*.hl7")) if folder.exists() else []:
        info = json.loads(raw.with_name(raw.name[:-4] + ".reason.json").read_text())
        out.append((raw.read_bytes(), info))
    return out


def wait_for(check: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


BAD_DATE = message(msh("ADT^A01^ADT_A01", "BAD0001"), pid(p7="19801345"))


def test_session_acks_each_message_in_order_and_dead_letters_the_bad_one(
        listen: Callable[..., Listener]) -> None:
    server = listen()
    with server.connect() as sock:
        sock.sendall(frame(adt("A01", "ADT0001")) + frame(oru("LAB0001")) + frame(BAD_DATE))
        acks = read_acks(sock, 3)
    assert [(a["MSA"][1], a["MSA"][2]) for a in acks] == [
        ("AA", "ADT0001"), ("AA", "LAB0001"), ("AE", "BAD0001")]
    assert acks[0]["MSH"][8] == "ACK^A01^ACK" and acks[0]["MSH"][11] == "2.5.1"
    assert acks[0]["MSH"][2:6] == ["HEALTHMESH", "NODE", "EPIC",
                                   "CITYHOSP^2.16.840.1.113883.19.5^ISO"]
    error = acks[2]
    assert "PID-7" in error["MSA"][3] and "19801345" in error["MSA"][3]
    assert error["ERR"][2] == "PID^1^7" and error["ERR"][3] == "102^Data type error^HL70357"
    letters = dead_letters(server.node)
    assert len(letters) == 1
    raw, info = letters[0]
    assert raw == BAD_DATE
    assert (info["ack"], info["location"], info["control_id"]) == ("AE", "PID-7", "BAD0001")
    assert "19801345" in info["reason"]


def test_an_ack_means_the_message_is_committed(listen: Callable[..., Listener]) -> None:
    server = listen()
    with server.connect() as sock:
        sock.sendall(frame(oru("LAB0001")))
        assert read_acks(sock, 1)[0]["MSA"][1] == "AA"
        # another connection to the database, as another process would see it
        with sqlite3.connect(server.node.store.path) as other:
            count = other.execute("SELECT count(*) FROM resources WHERE type='Observation'")
            assert count.fetchone()[0] == 5


def test_garbage_between_frames_and_an_unparseable_frame(listen: Callable[..., Listener]) -> None:
    server = listen()
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + frame(b"not hl7 at all") + b"\x00\xff junk"
                     + frame(adt("A01", "ADT0001")))
        acks = read_acks(sock, 2)
    assert acks[0]["MSA"][1] == "AR" and "does not start with an MSH" in acks[0]["MSA"][3]
    assert acks[1]["MSA"][1:3] == ["AA", "ADT0001"]
    assert [raw for raw, _ in dead_letters(server.node)] == [b"not hl7 at all"]


def test_an_oversized_message_is_refused_and_the_connection_goes_on(
        listen: Callable[..., Listener]) -> None:
    server = listen(mllp_max_message_bytes=4096)
    big = adt("A01", "BIG0001") + b"\r" + b"\r".join(
        seg("NTE", {1: str(i), 3: "x" * 200}).encode() for i in range(100))
    assert len(big) > 20000
    with server.connect() as sock:
        sock.sendall(frame(big) + frame(adt("A01", "ADT0001")))
        acks = read_acks(sock, 2)
    assert acks[0]["MSA"][1] == "AR" and "larger than the limit of 4096" in acks[0]["MSA"][3]
    assert acks[0]["MSA"][2] == "BIG0001"  # read from the head that was kept
    assert acks[1]["MSA"][1:3] == ["AA", "ADT0001"]
    (raw, info), = dead_letters(server.node)
    assert info["truncated"] is True and len(raw) == 4096 and big.startswith(raw)


def test_a_frame_cut_off_by_the_peer_is_dead_lettered(listen: Callable[..., Listener]) -> None:
    server = listen()
    with server.connect() as sock:
        sock.sendall(VT + oru("LAB0001")[:300])
    (raw, info), = wait_for(lambda: dead_letters(server.node))
    assert raw == oru("LAB0001")[:300]
    assert "closed inside a frame" in info["reason"]
    assert server.node.store.counts() == {}


def test_a_new_frame_before_the_end_abandons_the_first(listen: Callable[..., Listener]) -> None:
    server = listen()
    with server.connect() as sock:
        sock.sendall(VT + b"MSH|^~\\&|half a mess" + frame(adt("A01", "ADT0001")))
        acks = read_acks(sock, 1)
    assert acks[0]["MSA"][1:3] == ["AA", "ADT0001"]
    (raw, info), = dead_letters(server.node)
    assert raw == b"MSH|^~\\&|half a mess" and "new frame started" in info["reason"]


def test_an_idle_connection_is_closed(listen: Callable[..., Listener]) -> None:
    server = listen(mllp_idle_timeout_seconds=1)
    with server.connect() as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""  # the server hung up
        assert 0.8 < time.monotonic() - started < 8


def test_a_resent_message_is_acknowledged_without_new_versions(
        listen: Callable[..., Listener]) -> None:
    server = listen()
    acks = send(server.host, server.port, [oru("LAB0001"), oru("LAB0001")])
    assert [parse_ack(a)["MSA"][1] for a in acks] == ["AA", "AA"]
    with sqlite3.connect(server.node.store.path) as other:
        versions = other.execute("SELECT max(version), count(*) FROM resources "
                                 "WHERE type='Observation'").fetchone()
    assert versions == (1, 5)


def test_each_session_is_audited(listen: Callable[..., Listener]) -> None:
    server = listen()
    send(server.host, server.port, [adt("A01", "ADT0001"), BAD_DATE, adt("A01", "ADT0001")])

    def mllp_entries() -> list[Any]:
        return [e for e in server.node.audit.entries(action="ingest")
                if e.record.rule == "admin:mllp"]

    entry, = wait_for(mllp_entries)
    detail = entry.record.detail
    assert (detail["messages"], detail["accepted"], detail["rejected"],
            detail["duplicates"]) == (3, 2, 1, 1)
    assert entry.record.outcome == "failure"


def test_a_result_sent_over_mllp_is_found_by_a_fhir_search_on_its_loinc_code(
        listen: Callable[..., Listener]) -> None:
    server = listen()
    ack, = send(server.host, server.port, [oru("LAB0001")])
    assert parse_ack(ack)["MSA"][1] == "AA"
    headers = bearer(server.node)

    async def calls(client: Any) -> Any:
        return await client.get("/fhir/Observation",
                                params={"code": "http://loinc.org|2345-7"}, headers=headers)

    response = run_asgi(server.node, calls)
    assert response.status_code == 200, response.text
    found = [e["resource"] for e in response.json().get("entry", [])
             if e.get("search", {}).get("mode", "match") == "match"]
    assert len(found) == 1
    assert found[0]["valueQuantity"]["value"] == 182
    assert found[0]["valueQuantity"]["code"] == "mg/dL"


# -- the commands --------------------------------------------------------------------------


def test_mllp_serve_and_send_commands(tmp_path: Path) -> None:
    folder = tmp_path / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    good, bad = tmp_path / "good.hl7", tmp_path / "bad.hl7"
    good.write_bytes(adt("A01", "ADT0001").replace(b"\r", b"\n"))
    bad.write_bytes(BAD_DATE)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthmesh", "mllp", "serve", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"listening on 127.0.0.1:{port}" in proc.stdout.readline()
        result = run_cli("mllp", "send", f"127.0.0.1:{port}", str(good), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["acks"][0]["code"] == "AA"
        result = run_cli("mllp", "send", f"127.0.0.1:{port}", str(bad))
        assert result.returncode == 1 and "BAD0001 AE" in result.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "ADT^A01 ADT0001 AA" in out and "stopped" in out
    assert len(list((folder / "dead-letter").glob("*.hl7"))) == 1


def test_mllp_command_errors(tmp_path: Path) -> None:
    result = run_cli("mllp", "serve", str(tmp_path / "nowhere"))
    assert result.returncode == 3 and "not a healthmesh node folder" in result.stderr
    result = run_cli("mllp", "send", "no-port", str(tmp_path / "x.hl7"))
    assert result.returncode == 2
    (tmp_path / "x.hl7").write_bytes(adt("A01", "X"))
    result = run_cli("mllp", "send", f"127.0.0.1:{free_port()}", str(tmp_path / "x.hl7"))
    assert result.returncode == 6 and "cannot send" in result.stderr
