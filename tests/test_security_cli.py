"""The security commands: auth client/user/token, doctor and tls init, against real
processes (a node served over HTTPS with a certificate from the local CA)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from healthmesh.node import init_node
from tests.conftest import free_port, run_cli


def _findings(folder: Path) -> tuple[int, list[dict[str, str]]]:
    result = run_cli("doctor", str(folder), "--json")
    return result.returncode, json.loads(result.stdout)["findings"]


def test_doctor_names_each_weakness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = init_node(tmp_path / "node")
    code, findings = _findings(folder)
    assert code == 1
    assert [f["check"] for f in findings if f["level"] != "ok"] == ["tls"]  # no keys yet
    assert run_cli("tls", "init", str(folder)).returncode == 0
    code, findings = _findings(folder)
    assert code == 1
    assert [f["message"] for f in findings if f["level"] != "ok"] == [
        f"3 private key(s) stored unencrypted; set HEALTHMESH_KEY_PASSPHRASE_FILE to a file "
        f"outside the node folder and run 'healthmesh keys protect {folder}'"]
    secret = tmp_path / "secrets" / "passphrase"  # outside the node folder
    secret.parent.mkdir()
    secret.write_text("a passphrase of some length\n")
    monkeypatch.setenv("HEALTHMESH_KEY_PASSPHRASE_FILE", str(secret))
    protected = run_cli("keys", "protect", str(folder), "--json")
    assert protected.returncode == 0, protected.stderr
    assert len(json.loads(protected.stdout)["encrypted"]) == 3  # node, TLS CA and server keys
    code, findings = _findings(folder)
    assert code == 0, findings
    for pem in (folder / "keys").glob("*.pem"):
        assert b"ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    assert run_cli("node", "status", str(folder)).returncode == 0  # still opens, with it
    monkeypatch.delenv("HEALTHMESH_KEY_PASSPHRASE_FILE")
    refused = run_cli("node", "status", str(folder))
    assert refused.returncode == 3 and "passphrase" in refused.stderr  # not without it
    monkeypatch.setenv("HEALTHMESH_KEY_PASSPHRASE_FILE", str(secret))
    password = tmp_path / "pw"
    password.write_text("an admin password long enough\n")
    assert run_cli("auth", "user", "add", str(folder), "root", "--role", "admin",
                   "--password-file", str(password)).returncode == 0
    key = folder / "keys" / "node-ed25519.pem"
    key.chmod(0o644)
    os.chmod(folder, 0o755)
    code, findings = _findings(folder)
    warnings: dict[str, str] = {}
    for finding in findings:
        if finding["level"] == "warn":
            warnings[finding["check"]] = warnings.get(finding["check"], "") + finding["message"]
    assert code == 1
    assert str(key) in warnings["keys"] and "chmod 600" in warnings["keys"]
    assert "chmod 700" in warnings["data"]
    assert "root" in warnings["accounts"]


def test_doctor_reports_an_expired_revocation_list(tmp_path: Path) -> None:
    from healthmesh.security.authority import NetworkAuthority

    folder = init_node(tmp_path / "node")
    authority = NetworkAuthority.create(tmp_path / "authority", "Test network")
    (folder / "network").mkdir()
    old = datetime.now(UTC) - timedelta(days=30)
    (folder / "network" / "crl.pem").write_bytes(authority.crl_pem(now=old))
    code, findings = _findings(folder)
    errors = [f["message"] for f in findings if f["level"] == "error"]
    assert code == 1 and any("revocation list expired" in m for m in errors)


def test_tls_serve_and_a_token_from_the_command_line(tmp_path: Path) -> None:
    folder = init_node(tmp_path / "node")
    assert run_cli("tls", "init", str(folder), "--hosts", "127.0.0.1,localhost").returncode == 0
    assert run_cli("auth", "client", "add", str(folder), "ehr", "--scope", "system/*.rs",
                   "--purpose", "TREAT", "--org", "clinic",
                   "--redirect-uri", "http://127.0.0.1:9/cb").returncode == 0
    issued = run_cli("auth", "token", str(folder), "--client-id", "ehr", "--scope",
                     "system/Patient.rs", "--purpose", "TREAT", "--ttl", "2m", "--json")
    assert issued.returncode == 0, issued.stderr
    token = json.loads(issued.stdout)
    assert token["scope"] == "system/Patient.rs" and token["expires_in"] <= 120
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "healthmesh", "serve", str(folder),
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        base = f"https://127.0.0.1:{port}/fhir"
        ca = ssl.create_default_context(cafile=str(folder / "tls" / "ca-cert.pem"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/metadata", verify=ca, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.get(base + "/Patient", headers=auth, verify=ca).status_code == 200
        assert httpx.get(base + "/Observation", headers=auth, verify=ca).status_code == 403
        assert httpx.get(base + "/Patient", verify=ca).status_code == 401
        with pytest.raises(httpx.ConnectError):  # not trusted without the local CA
            httpx.get(base + "/metadata")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.parametrize(("args", "code"), [
    (["bad id!", "--scope", "system/*.rs", "--purpose", "TREAT", "--redirect-uri",
      "https://app.example/cb"], 2),
    (["app", "--scope", "system/*.rx", "--purpose", "TREAT", "--redirect-uri",
      "https://app.example/cb"], 2),
    (["app", "--scope", "system/*.rs", "--purpose", "treat", "--redirect-uri",
      "https://app.example/cb"], 2),
    (["app", "--scope", "system/*.rs", "--purpose", "TREAT"], 2),  # neither keys nor URIs
    (["app", "--scope", "system/*.rs", "--purpose", "TREAT", "--redirect-uri",
      "http://app.example/cb"], 2),  # plain http off loopback
])
def test_client_registration_refuses_bad_input(tmp_path: Path, args: list[str],
                                               code: int) -> None:
    folder = init_node(tmp_path / "node")
    result = run_cli("auth", "client", "add", str(folder), *args)
    assert result.returncode == code, result.stderr
    assert "error:" in result.stderr


def test_client_keys_must_be_public_jwks(tmp_path: Path) -> None:
    folder = init_node(tmp_path / "node")
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA",
                                             "d": "secret"}]}))
    result = run_cli("auth", "client", "add", str(folder), "svc", "--scope", "system/*.rs",
                     "--purpose", "TREAT", "--jwks", str(private))
    assert result.returncode == 4 and "public keys only" in result.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = run_cli("auth", "client", "add", str(folder), "svc", "--scope", "system/*.rs",
                     "--purpose", "TREAT", "--jwks", str(garbage))
    assert result.returncode == 4


def test_tokens_only_within_what_the_client_may_have(tmp_path: Path) -> None:
    folder = init_node(tmp_path / "node")
    run_cli("auth", "client", "add", str(folder), "ehr", "--scope", "system/Patient.rs",
            "--purpose", "TREAT", "--org", "clinic", "--redirect-uri", "http://127.0.0.1:9/c")
    for extra in (["--scope", "system/*.rs"], ["--scope", "system/Patient.rs", "--purpose",
                                                "HRESCH"],
                  ["--scope", "system/Patient.rs", "--org", "hospital"],
                  ["--scope", "system/Patient.rs", "--ttl", "48h"],
                  ["--scope", "system/Patient.rs", "--patient", "nobody"]):
        result = run_cli("auth", "token", str(folder), "--client-id", "ehr", *extra)
        assert result.returncode == 2, (extra, result.stderr)
    result = run_cli("auth", "token", str(folder), "--client-id", "nobody", "--scope",
                     "system/Patient.rs")
    assert result.returncode == 2 and "auth client add" in result.stderr


def test_a_user_enrolled_with_totp_signs_in_with_the_code(tmp_path: Path) -> None:
    import pyotp

    from healthmesh.node import open_node

    folder = init_node(tmp_path / "node")
    password = tmp_path / "pw"
    password.write_text("a steward password long enough\n")
    done = run_cli("auth", "user", "add", str(folder), "dana", "--role", "steward",
                   "--password-file", str(password), "--totp", "--json")
    assert done.returncode == 0, done.stderr
    uri = json.loads(done.stdout)["totp_uri"]
    assert uri.startswith("otpauth://totp/") and "dana" in uri and "issuer=healthmesh" in uri
    code = pyotp.parse_uri(uri).now()
    node = open_node(folder)
    try:
        store = node.auth.store
        assert store.check_password("dana", "a steward password long enough", None) is None
        user = store.check_password("dana", "a steward password long enough", code)
        assert user is not None and user.role == "steward"
    finally:
        node.close()
