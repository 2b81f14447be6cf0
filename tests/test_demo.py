"""`healthmesh demo` (what `make demo` runs): a network that answers, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import sign_in
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network")]


def _four_free_ports() -> int:
    """A port P with P-1 .. P+2 free (the hub, hospital, clinic and lab)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 1025 or port > 65530:
            continue
        try:
            for candidate in range(port - 1, port + 3):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no four consecutive free ports")


def test_demo_serves_a_network_that_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    folder, port = tmp_path / "demo", _four_free_ports()
    demo = subprocess.Popen(
        [sys.executable, "-m", "healthmesh", "demo", str(folder), "--patients", "150",
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        assert lines and "Press Ctrl-C" in lines[-1], "".join(lines)
        text = "".join(lines)
        assert f"https://127.0.0.1:{port}/fhir" in text  # the hospital's FHIR base, over TLS
        tls = ssl.create_default_context(cafile=str(folder / "tls" / "ca-cert.pem"))
        metadata = httpx.get(f"https://127.0.0.1:{port}/fhir/metadata", timeout=10, verify=tls)
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        # the printed example request works as printed; without its token it is refused
        example = re.search(r"curl --cacert (\S+) -H 'Authorization: Bearer (\S+)' '(\S+)'",
                            text)
        assert example is not None, text
        ca, token, url = example.groups()
        tls = ssl.create_default_context(cafile=ca)
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                           verify=tls)
        assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"
        assert httpx.get(url, timeout=30, verify=tls).status_code == 401
        # the printed demo accounts sign in to the web pages at the hospital
        accounts = dict(re.findall(r"user '(patient|steward)'.*?password (\S+)", text))
        assert set(accounts) == {"patient", "steward"}, text
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=tls,
                          timeout=30) as browser:
            assert sign_in(browser, "patient", accounts["patient"], "/web/me") == "/web/me"
            mine = browser.get("/web/me/consents")
            assert mine.status_code == 200 and "research" in mine.text.lower()
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=tls,
                          timeout=30) as browser:
            home = sign_in(browser, "steward", accounts["steward"], "/web/steward")
            assert home == "/web/steward"
            assert browser.get("/web/me").status_code == 403  # not the steward's page
        dashboard = re.search(r"public-health dashboard: (\S+)", text)
        assert dashboard is not None, text
        page = httpx.get(dashboard.group(1), timeout=30, verify=tls)
        assert page.status_code == 200 and "hypertension" in page.text.lower()
        asked = run_cli("query", "count", "--network", str(folder), "--purpose", "PUBHLTH",
                        "--agreement", "public-health", "--json")
        assert asked.returncode == 0, asked.stderr
        answer = json.loads(asked.stdout)
        assert [s["status"] for s in answer["sites"]] == ["ok", "ok", "ok"]
        pids = json.loads((folder / "network.json").read_text())["pids"]
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        if demo.stdout:
            demo.stdout.close()
    assert demo.returncode == 0
    assert not (folder / "network.json").exists()
    for pid in pids.values():  # every process of the network has stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
