"""Enrolling a real network with the CLI, each party doing its own step with its own key.

The authority is created, the hub gets its certificate, a hospital node and an analyst ask
to join with signing requests, the authority issues, each installs; the hub registers
them; both sign an agreement, the node installs it; then a hub and a node process run and
the analyst's question is answered by the node, which connects out to the hub. Revoking
the node (and giving the hub the new revocation list) cuts it off at its next request.
Misuse is refused with a message and a stable exit code.

Every test of this module runs on one worker, in order: the last one revokes the node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from healthmesh.network.client import HubClient
from healthmesh.network.local import ANALYST, demo_agreements
from healthmesh.network.members import Identity
from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.xdist_group("membership")
NODE_ORG = "Organization/hospital"


def ok(*args: str | Path) -> str:
    result = run_cli(*map(str, args), timeout=60)
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def fails(code: int | tuple[int, ...], *args: str | Path) -> str:
    result = run_cli(*map(str, args), timeout=60)
    codes = code if isinstance(code, tuple) else (code,)
    assert result.returncode in codes, f"{args}: {result.returncode}\n{result.stdout}" \
                                       f"{result.stderr}"
    assert "error:" in result.stderr
    return result.stderr.replace("\n", " ")


def agreement_file(path: Path) -> Path:
    """The demo public-health agreement between the analyst and the hospital, unsigned."""
    agreement = next(a for a in demo_agreements(["hospital"]) if a.id == "public-health")
    assert agreement.requester == ANALYST
    path.write_bytes(orjson.dumps(agreement.to_json(), option=orjson.OPT_INDENT_2))
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("membership")
    hub_port = free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    auth, hub, node, analyst = (root / n for n in ("authority", "hub", "hospital", "analyst"))
    # the authority's administrator, then the hub's operator
    ok("network", "init", auth, "--name", "Test health data network")
    ok("hub", "init", hub, "--authority", auth)
    # the hospital's IT administrator: a node with a little data and its own settings
    ok("synth", "--out", root / "synth", "--patients", "40", "--sites", "hospital",
       "--seed", "1", "-q")
    ok("node", "init", node, "--name", "General Hospital")
    with (node / "node.toml").open("a") as config:
        config.write("agent_poll_seconds = 1\nrelease_review = \"auto\"\n")
    ok("ingest", node, root / "synth" / "hospital", "-q")
    asked = ok("node", "join", node, "--org", "hospital", "--roles", "provider",
               "--hub", hub_url)
    assert "member.csr" in asked and "healthmesh network issue" in asked
    ok("network", "issue", auth, node / "network" / "member.csr", "--roles", "provider",
       "--out", root / "hospital-cert.pem")
    ok("node", "join", node, "--cert", root / "hospital-cert.pem",
       "--ca", auth / "authority-cert.pem", "--crl", auth / "crl.pem")
    # an analyst, the same way
    ok("network", "credentials", analyst, "--org", "analyst", "--name", "Analytics Office",
       "--roles", "research,public-health", "--hub", hub_url)
    issued = orjson.loads(ok("network", "issue", auth, analyst / "member.csr", "--roles",
                             "research,public-health", "--out", root / "analyst-cert.pem",
                             "--json"))
    assert issued["org"] == ANALYST and issued["roles"] == ["public-health", "research"]
    ok("network", "credentials", analyst, "--cert", root / "analyst-cert.pem",
       "--ca", auth / "authority-cert.pem", "--crl", auth / "crl.pem")
    # the hub registers both
    registered = orjson.loads(ok("hub", "register", hub, root / "hospital-cert.pem",
                                 root / "analyst-cert.pem", "--json"))
    assert registered == {"registered": [NODE_ORG, ANALYST]}
    # each party signs the agreement with its own key; the node installs it
    terms = agreement_file(root / "public-health.json")
    ok("agreement", "sign", terms, "--credentials", analyst / "credentials.json")
    signed = orjson.loads(ok("agreement", "sign", terms, "--node", node, "--json"))
    assert signed["missing"] == [] and signed["signatures"] == [ANALYST, NODE_ORG]
    ok("agreement", "install", node, terms, "--members", root / "analyst-cert.pem")
    return {"root": root, "hub_url": hub_url, "hub_port": hub_port, "auth": auth, "hub": hub,
            "node": node, "analyst": analyst, "terms": terms}


def test_join_keeps_the_node_settings_and_installs_the_membership(net: dict[str, Any]) -> None:
    import tomllib

    config = tomllib.loads((net["node"] / "node.toml").read_text())["node"]
    assert config == {"name": "General Hospital", "agent_poll_seconds": 1,
                      "release_review": "auto", "organization": NODE_ORG,
                      "hub_url": net["hub_url"]}
    network = net["node"] / "network"
    for name in ("member-cert.pem", "ca-cert.pem", "crl.pem", "agreements/public-health.json"):
        assert (network / name).is_file(), name
    credentials = orjson.loads((net["analyst"] / "credentials.json").read_bytes())
    assert credentials == {"org": ANALYST, "hub": net["hub_url"], "key": "key.pem",
                           "cert": "member-cert.pem", "ca": "ca-cert.pem"}


def test_unknown_role_is_refused(net: dict[str, Any]) -> None:
    message = fails(2, "network", "issue", net["auth"], net["analyst"] / "member.csr",
                    "--roles", "research,superuser", "--out", net["root"] / "x.pem")
    assert "superuser" in message and "provider" in message  # names the bad and good roles
    assert not (net["root"] / "x.pem").exists()
    message = fails(2, "node", "join", net["node"], "--org", "hospital", "--roles", "admin",
                    "--hub", net["hub_url"])
    assert "admin" in message


def test_certificate_made_for_another_key_is_refused(net: dict[str, Any]) -> None:
    before = (net["node"] / "network" / "member-cert.pem").read_bytes()
    message = fails(3, "node", "join", net["node"], "--cert", net["root"] / "analyst-cert.pem",
                    "--ca", net["auth"] / "authority-cert.pem")
    assert "another key" in message
    assert (net["node"] / "network" / "member-cert.pem").read_bytes() == before
    other = net["root"] / "other-authority"
    ok("network", "init", other, "--name", "Another network")
    ok("network", "issue", other, net["analyst"] / "member.csr", "--roles", "research",
       "--out", net["root"] / "foreign.pem")
    message = fails(3, "hub", "register", net["hub"], net["root"] / "foreign.pem")
    assert "foreign.pem" in message and "not by this network's authority" in message
    fails(4, "hub", "register", net["hub"], net["root"] / "missing.pem")


def test_half_signed_agreement_is_refused(net: dict[str, Any]) -> None:
    terms = agreement_file(net["root"] / "half.json")
    ok("agreement", "sign", terms, "--credentials", net["analyst"] / "credentials.json")
    message = fails(3, "agreement", "install", net["node"], terms,
                    "--members", net["root"] / "analyst-cert.pem")
    assert "not signed by Organization/hospital" in message
    # a signature over other terms does not count either
    data = orjson.loads(net["terms"].read_bytes())
    data["disclosure"]["min_cell"] = 1
    tampered = net["root"] / "tampered.json"
    tampered.write_bytes(orjson.dumps(data))
    message = fails(3, "agreement", "install", net["node"], tampered,
                    "--members", net["root"] / "analyst-cert.pem")
    assert "does not cover these terms" in message
    fails(2, "agreement", "sign", terms)  # neither --node nor --credentials


def _spawn(args: list[str | Path], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "healthmesh", *map(str, args)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_for(check: Any, what: str, process: subprocess.Popen[bytes], log: Path,
              seconds: float = 60) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert process.poll() is None, f"{what}: exited\n{log.read_text()[-3000:]}"
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen in {seconds} s\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_enrolled_node_answers_the_analyst_then_is_cut_off_when_revoked(
        net: dict[str, Any]) -> None:
    hub_log, node_log = net["root"] / "hub.log", net["root"] / "node.log"
    node_port = free_port()
    credentials = net["analyst"] / "credentials.json"
    processes = []
    try:
        hub = _spawn(["hub", "serve", net["hub"], "--port", str(net["hub_port"])], hub_log)
        processes.append(hub)
        _wait_for(lambda: httpx.get(f"{net['hub_url']}/health", timeout=2).status_code == 200,
                  "hub start", hub, hub_log)
        ok("agreement", "publish", net["terms"], "--credentials", credentials)
        node = _spawn(["serve", net["node"], "--port", str(node_port)], node_log)
        processes.append(node)
        client = HubClient(Identity.load(credentials))
        try:
            _wait_for(lambda: any(m["org"] == NODE_ORG and m["connected"]
                                  for m in client.request("GET", "/members")["members"]),
                      "node agent connecting out", node, node_log)
        finally:
            client.close()

        answer = orjson.loads(ok("query", "count", "--hub", net["hub_url"], "--credentials",
                                 credentials, "--agreement", "public-health",
                                 "--purpose", "PUBHLTH", "--json"))
        (site,) = answer["sites"]
        assert site["site"] == NODE_ORG and site["status"] == "ok", site
        assert answer["pooled"]["sites_covered"] == [NODE_ORG]
        assert site["rows"][0]["count"] > 0

        revoked = ok("network", "revoke", net["auth"], net["root"] / "hospital-cert.pem",
                     "--reason", "keyCompromise")
        assert "revoked serial" in revoked
        (net["hub"] / "crl.pem").write_bytes((net["auth"] / "crl.pem").read_bytes())
        _wait_for(lambda: "was revoked" in node_log.read_text(), "the hub refusing the node",
                  node, node_log, seconds=30)
        refusal = next(line for line in node_log.read_text().splitlines()
                       if "was revoked" in line)
        assert "401" in refusal and "'hospital'" in refusal and "keyCompromise" in refusal
    finally:
        for process in reversed(processes):
            _stop(process)
