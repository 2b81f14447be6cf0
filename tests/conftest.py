"""Shared fixtures: reference data, node builders and a live server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthmesh.node import Node, init_node, open_node

REPO = Path(__file__).resolve().parents[1]
# A clinician's organisation reading for treatment: what most API tests act as.
CLINICIAN_ORG = "Organization/test-hospital"
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The reference material folder (../shared); tests need it, so fail loudly."""
    if not (SHARED / "fhir-r4").is_dir():
        pytest.fail(f"reference data not found at {SHARED}: clone the repo beside shared/")
    return SHARED


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Builder: ``make_node(name="x")`` opens a fresh node folder under tmp_path."""
    opened: list[Node] = []

    def build(name: str = "node", **settings: object) -> Node:
        folder = init_node(tmp_path / name)
        node = open_node(folder, overrides=dict(settings))
        opened.append(node)
        return node

    yield build
    for node in opened:
        node.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the healthmesh command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "healthmesh", *args],
        capture_output=True, text=True, timeout=timeout, **kwargs,  # type: ignore[call-overload]
    )


def bearer(
    target: Node | Path, org: str | None = CLINICIAN_ORG, purpose: str = "TREAT",
    scope: str = "system/*.cruds", *, patient: str | None = None, ttl: int = 3600,
) -> dict[str, str]:
    """Headers with an access token of the node (as 'healthmesh auth token' makes it) for
    a backend client of ``org`` asking for ``purpose`` with ``scope``."""
    from healthmesh.cli_auth import ensure_client, mint_token

    node = target if isinstance(target, Node) else open_node(target)
    try:
        client = f"test-{(org or 'none').split('/')[-1]}"
        ensure_client(node, client, org, "system/*.cruds user/*.cruds patient/*.cruds",
                      ("TREAT", "ETREAT", "HRESCH", "PUBHLTH", "HPAYMT", "HOPERAT"))
        issued = mint_token(node, client, scope, purpose, patient=patient, ttl=ttl)
    finally:
        if not isinstance(target, Node):
            node.close()
    return {"Authorization": f"Bearer {issued.access_token}"}


def patient_bearer(node: Node, patient_id: str) -> dict[str, str]:
    """Headers with a patient's own access token (as 'healthmesh patient token' makes it)."""
    from healthmesh.cli import issue_patient_token

    return {"Authorization": f"Bearer {issue_patient_token(node, patient_id, 3600)}"}


class LiveServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "healthmesh", "serve", str(folder), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/metadata", timeout=5).status_code == 200:
                    self.clinician = bearer(folder)
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


def run_asgi(node: Node, calls: Callable[[httpx.AsyncClient], Any]) -> Any:
    """Run ``calls(client)`` against the node's app in process (no server needed)."""
    import anyio

    from healthmesh.api.app import create_app

    async def go() -> Any:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await calls(client)

    return anyio.run(go)


@pytest.fixture(scope="session")
def synthea_node(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """A node folder loaded with the Synthea sample bundles through the CLI."""
    folder = tmp_path_factory.mktemp("synthea") / "node"
    assert run_cli("node", "init", str(folder)).returncode == 0
    result = run_cli("ingest", str(folder), str(shared / "data/synthea"), "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    return folder


@pytest.fixture(scope="session")
def server(synthea_node: Path) -> Iterator[LiveServer]:
    """A live ``healthmesh serve`` process on a loopback port over the Synthea node."""
    live = LiveServer(synthea_node)
    yield live
    live.stop()


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[LiveServer]:
    folder = init_node(tmp_path / "node")
    live = LiveServer(folder)
    yield live
    live.stop()
