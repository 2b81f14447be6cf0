"""Cryptographic primitives of network membership: key files, membership certificates
and revocation, signed requests and payloads with replay protection, sealed envelopes."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import healthmesh.security as security
from healthmesh.errors import HealthmeshError
from healthmesh.security import (
    DecryptionFailed,
    InvalidCertificate,
    InvalidSignature,
    NetworkAuthority,
    ReplayedMessage,
    RequestVerifier,
    RevokedCertificate,
    SecurityError,
    SQLiteNonceStore,
    box_public_pem,
    generate_box_key,
    generate_key,
    key_file_warnings,
    load_box_key,
    load_box_public_key,
    load_private_key,
    load_public_key,
    make_csr,
    open_sealed,
    public_key_pem,
    read_csr,
    seal,
    sign_payload,
    sign_request,
    verify_membership,
    verify_payload,
)

EXPORTED = [
    "ROLES",
    "SIGNATURE_HEADER",
    "DecryptionFailed",
    "InvalidCertificate",
    "InvalidSignature",
    "Membership",
    "MembershipRequest",
    "MemoryNonceStore",
    "NetworkAuthority",
    "NonceStore",
    "ReplayedMessage",
    "RequestVerifier",
    "RevokedCertificate",
    "SQLiteNonceStore",
    "SecurityError",
    "VerifiedRequest",
    "box_public_pem",
    "generate_box_key",
    "generate_key",
    "key_file_warnings",
    "load_box_key",
    "load_box_public_key",
    "load_private_key",
    "load_public_key",
    "make_csr",
    "open_sealed",
    "public_key_pem",
    "read_csr",
    "seal",
    "sign_payload",
    "sign_request",
    "unverified_sender",
    "verify_membership",
    "verify_payload",
]
NOW = 1_800_000_000.0
HEADER = "X-Healthmesh-Signature"


def test_public_api_is_explicit() -> None:
    assert sorted(security.__all__) == sorted(EXPORTED)
    assert all(hasattr(security, name) for name in security.__all__)
    assert issubclass(SecurityError, HealthmeshError)
    for error in (
        InvalidCertificate,
        RevokedCertificate,
        InvalidSignature,
        ReplayedMessage,
        DecryptionFailed,
    ):
        assert issubclass(error, SecurityError)


# --- key files ------------------------------------------------------------------------


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "keys" / "node.pem")
    assert stat.S_IMODE((tmp_path / "keys" / "node.pem").stat().st_mode) == 0o600
    loaded = load_private_key(tmp_path / "keys" / "node.pem")
    assert public_key_pem(loaded) == public_key_pem(key)
    assert public_key_pem(load_public_key(public_key_pem(key))) == public_key_pem(key)
    assert key_file_warnings(tmp_path / "keys" / "node.pem") == []


def test_passphrase_protected_key_needs_the_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    key = generate_key(path, passphrase="correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    with pytest.raises(SecurityError, match="passphrase is needed"):
        load_private_key(path)
    with pytest.raises(SecurityError, match="passphrase is wrong"):
        load_private_key(path, passphrase="battery staple")
    loaded = load_private_key(path, passphrase=b"correct horse")
    assert public_key_pem(loaded) == public_key_pem(key)


def test_existing_key_is_never_replaced(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "node.pem")
    with pytest.raises(SecurityError, match="already exists"):
        generate_key(tmp_path / "node.pem")
    assert public_key_pem(load_private_key(tmp_path / "node.pem")) == public_key_pem(key)
    assert [p.name for p in tmp_path.iterdir()] == ["node.pem"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_readable_key_loads_but_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    generate_key(path)
    path.chmod(0o644)
    assert isinstance(load_private_key(path), Ed25519PrivateKey)
    [warning] = key_file_warnings(path)
    assert "0644" in warning and "chmod 600" in warning
    missing = tmp_path / "missing.pem"
    assert key_file_warnings(missing) == [f"{missing} does not exist"]


def test_wrong_kind_of_key_is_refused(tmp_path: Path) -> None:
    generate_box_key(tmp_path / "box.pem")
    with pytest.raises(SecurityError, match="not hold an ed25519"):
        load_private_key(tmp_path / "box.pem")
    with pytest.raises(SecurityError, match="not a PEM public key"):
        load_public_key("not a key")


# --- membership certificates ----------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> NetworkAuthority:
    return NetworkAuthority.create(tmp_path_factory.mktemp("net") / "authority", "Test Net")


@pytest.fixture(scope="module")
def node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def issue(authority: NetworkAuthority, key: Ed25519PrivateKey, roles: list[str], **kw) -> bytes:
    csr = make_csr(key, "st-mary", "St Mary Hospital", roles)
    return authority.sign_membership(csr, roles, **kw)


def test_membership_round_trip_carries_organisation_and_roles(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    cert = issue(authority, node_key, ["provider", "lab"])
    member = verify_membership(cert, authority.cert_pem, authority.crl_pem())
    assert (member.org_id, member.org_name, member.roles) == (
        "st-mary",
        "St Mary Hospital",
        ("lab", "provider"),
    )
    assert member.has_role("lab") and not member.has_role("hub")
    assert public_key_pem(member.public_key) == public_key_pem(node_key)
    assert member.not_after - member.not_before >= timedelta(days=365)
    assert member.cert_pem == cert


def test_authority_grants_roles_it_chooses_not_those_requested(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    csr = make_csr(node_key, "st-mary", "St Mary Hospital", ["provider", "research"])
    request = read_csr(csr)
    assert (request.org_id, request.roles) == ("st-mary", ("provider", "research"))
    member = verify_membership(authority.sign_membership(csr, ["provider"]), authority.cert_pem)
    assert member.roles == ("provider",)


def test_serial_numbers_are_random(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    serials = {
        verify_membership(issue(authority, node_key, ["lab"]), authority.cert_pem).serial
        for _ in range(3)
    }
    assert len(serials) == 3 and all(s.bit_length() > 64 for s in serials)


def test_unknown_or_missing_role_is_refused(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    with pytest.raises(InvalidCertificate, match="unknown role 'admin'"):
        make_csr(node_key, "st-mary", "St Mary Hospital", ["provider", "admin"])
    csr = make_csr(node_key, "st-mary", "St Mary Hospital", ["provider"])
    with pytest.raises(InvalidCertificate, match="unknown role 'superuser'"):
        authority.sign_membership(csr, ["superuser"])
    with pytest.raises(InvalidCertificate, match="at least one role"):
        authority.sign_membership(csr, [])


def test_bad_organisation_id_is_refused(node_key: Ed25519PrivateKey) -> None:
    with pytest.raises(InvalidCertificate, match="organisation id"):
        make_csr(node_key, "st mary/../x", "St Mary", ["provider"])


def test_certificate_of_another_authority_is_refused(
    tmp_path: Path, authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    impostor = NetworkAuthority.create(tmp_path / "impostor", "Test Net")  # same name
    cert = issue(impostor, node_key, ["hub"])
    with pytest.raises(InvalidCertificate, match="not the network authority's"):
        verify_membership(cert, authority.cert_pem)
    other = NetworkAuthority.create(tmp_path / "other", "Other Net")
    with pytest.raises(InvalidCertificate, match="issued by 'O=Other Net,CN=Other Net'"):
        verify_membership(issue(other, node_key, ["hub"]), authority.cert_pem)


def test_edited_certificate_is_refused(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    cert = issue(authority, node_key, ["provider"])
    member = verify_membership(cert, authority.cert_pem)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
    assert der.count(b"provider") == 1
    edited = x509.load_der_x509_certificate(der.replace(b"provider", b"research"))
    with pytest.raises(InvalidCertificate, match="signature"):
        verify_membership(edited.public_bytes(Encoding.PEM), authority.cert_pem)
    assert member.roles == ("provider",)


def test_expired_and_not_yet_valid_certificates_are_refused(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    cert = issue(authority, node_key, ["lab"], days=30, now=issued)
    assert verify_membership(cert, authority.cert_pem, at=issued + timedelta(days=29)).roles
    with pytest.raises(InvalidCertificate, match="expired on 2030-01-31"):
        verify_membership(cert, authority.cert_pem, at=issued + timedelta(days=31))
    with pytest.raises(InvalidCertificate, match="not valid before 2029-12-31"):
        verify_membership(cert, authority.cert_pem, at=issued - timedelta(days=1))


def test_membership_never_outlives_the_authority(
    authority: NetworkAuthority, node_key: Ed25519PrivateKey
) -> None:
    member = verify_membership(issue(authority, node_key, ["lab"], days=40_000), authority.cert_pem)
    assert member.not_after == authority.certificate.not_valid_after_utc


def test_revoked_certificate_is_refused_even_after_reopening(
    tmp_path: Path, node_key: Ed25519PrivateKey
) -> None:
    authority = NetworkAuthority.create(tmp_path / "ca", "Test Net", passphrase="pw")
    cert = issue(authority, node_key, ["payer"])
    keep = issue(authority, node_key, ["payer"])
    serial = verify_membership(cert, authority.cert_pem).serial
    authority.revoke(serial, "keyCompromise")
    authority.revoke(serial, "superseded")  # idempotent: the first reason stands
    reopened = NetworkAuthority.open(tmp_path / "ca", passphrase="pw")
    crl = reopened.crl_pem()
    with pytest.raises(RevokedCertificate, match=f"serial {serial:x}.*keyCompromise"):
        verify_membership(cert, reopened.cert_pem, crl)
    assert verify_membership(keep, reopened.cert_pem, crl).roles == ("payer",)
    assert reopened.revoked_serials() == {serial}


def test_unknown_revocation_reason_is_refused(authority: NetworkAuthority) -> None:
    with pytest.raises(SecurityError, match="unknown revocation reason 'bored'"):
        authority.revoke(12345, "bored")


def test_forged_or_stale_revocation_list_is_refused(
    tmp_path: Path, node_key: Ed25519PrivateKey
) -> None:
    authority = NetworkAuthority.create(tmp_path / "ca", "Test Net")
    cert = issue(authority, node_key, ["lab"])
    authority.revoke(verify_membership(cert, authority.cert_pem).serial)
    forger = NetworkAuthority.create(tmp_path / "forger", "Test Net")  # empty list, same name
    with pytest.raises(InvalidCertificate, match="revocation list is not signed"):
        verify_membership(cert, authority.cert_pem, forger.crl_pem())
    old = authority.crl_pem(now=datetime.now(UTC) - timedelta(days=8))
    with pytest.raises(InvalidCertificate, match="revocation list is out of date"):
        verify_membership(cert, authority.cert_pem, old)
    with pytest.raises(InvalidCertificate, match="not a PEM X.509 CRL"):
        verify_membership(cert, authority.cert_pem, b"garbage")


def test_authority_files(tmp_path: Path) -> None:
    authority = NetworkAuthority.create(tmp_path / "ca", "Test Net", passphrase="pw")
    assert stat.S_IMODE((tmp_path / "ca" / "authority-key.pem").stat().st_mode) == 0o600
    assert authority.network_name == "Test Net"
    with pytest.raises(SecurityError, match="already holds a network authority"):
        NetworkAuthority.create(tmp_path / "ca", "Test Net")
    with pytest.raises(SecurityError, match="passphrase"):
        NetworkAuthority.open(tmp_path / "ca")
    assert NetworkAuthority.open(tmp_path / "ca", "pw").cert_pem == authority.cert_pem


# --- signed requests ------------------------------------------------------------------


@pytest.fixture()
def keys() -> dict[str, Ed25519PrivateKey]:
    return {"st-mary": Ed25519PrivateKey.generate(), "city-lab": Ed25519PrivateKey.generate()}


def verifier_for(keys: dict[str, Ed25519PrivateKey], **kw) -> RequestVerifier:
    def public_key_for(sender: str) -> Ed25519PublicKey | None:
        return keys[sender].public_key() if sender in keys else None

    return RequestVerifier(public_key_for, **kw)


PATH = "/fhir/Patient?name=smith"


def test_signed_request_verifies(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = sign_request(keys["st-mary"], "st-mary", "post", PATH, b"{}", now=NOW)
    lowercase = {k.lower(): v for k, v in headers.items()}  # as ASGI servers give them
    verified = verifier_for(keys).verify(lowercase, "POST", PATH, b"{}", now=NOW + 10)
    assert (verified.sender, verified.iat) == ("st-mary", int(NOW))
    assert len(verified.nonce) == 32 and verified.token == headers[HEADER]


@pytest.mark.parametrize(
    ("method", "path", "body", "error"),
    [
        ("GET", PATH, b"{}", "signed for method POST, not GET"),
        ("POST", "/fhir/Observation?name=smith", b"{}", "signed for '/fhir/Patient"),
        ("POST", "/fhir/Patient?name=jones", b"{}", "signed for '/fhir/Patient"),
        ("POST", "/fhir/Patient", b"{}", "signed for '/fhir/Patient"),
        ("POST", PATH, b'{"x":1}', "body is not the body that was signed"),
    ],
)
def test_tampered_request_is_refused(
    keys: dict[str, Ed25519PrivateKey], method: str, path: str, body: bytes, error: str
) -> None:
    headers = sign_request(keys["st-mary"], "st-mary", "POST", PATH, b"{}", now=NOW)
    with pytest.raises(InvalidSignature, match=error):
        verifier_for(keys).verify(headers, method, path, body, now=NOW)


def test_request_claiming_another_sender_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = sign_request(keys["st-mary"], "city-lab", "GET", PATH, b"", now=NOW)
    with pytest.raises(InvalidSignature, match="signature of 'city-lab' does not verify"):
        verifier_for(keys).verify(headers, "GET", PATH, b"", now=NOW)
    stranger = sign_request(Ed25519PrivateKey.generate(), "evil", "GET", PATH, b"", now=NOW)
    with pytest.raises(InvalidSignature, match="unknown sender 'evil'"):
        verifier_for(keys).verify(stranger, "GET", PATH, b"", now=NOW)


def test_altered_signature_or_missing_header_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    token = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW)[HEADER]
    head, claims, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    altered = f"{head}.{claims}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    verifier = verifier_for(keys)
    with pytest.raises(InvalidSignature, match="does not verify"):
        verifier.verify({HEADER: altered}, "GET", PATH, b"", now=NOW)
    with pytest.raises(InvalidSignature, match="not a well-formed JWS"):
        verifier.verify({HEADER: "abc.def"}, "GET", PATH, b"", now=NOW)
    with pytest.raises(InvalidSignature, match="no X-Healthmesh-Signature header"):
        verifier.verify({}, "GET", PATH, b"", now=NOW)
    assert verifier.verify({HEADER: token}, "GET", PATH, b"", now=NOW).sender == "st-mary"


def test_replayed_request_is_refused(keys: dict[str, Ed25519PrivateKey]) -> None:
    headers = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW)
    verifier = verifier_for(keys)
    verifier.verify(headers, "GET", PATH, b"", now=NOW)
    with pytest.raises(ReplayedMessage, match="replayed"):
        verifier.verify(headers, "GET", PATH, b"", now=NOW + 5)
    # once the nonce is forgotten, the timestamp alone refuses the replay
    with pytest.raises(ReplayedMessage, match="only ±300s"):
        verifier.verify(headers, "GET", PATH, b"", now=NOW + 3600)


@pytest.mark.parametrize("offset", [-301, 301])
def test_stale_or_future_timestamp_is_refused(
    keys: dict[str, Ed25519PrivateKey], offset: int
) -> None:
    headers = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW + offset)
    with pytest.raises(ReplayedMessage, match="check both clocks"):
        verifier_for(keys).verify(headers, "GET", PATH, b"", now=NOW)
    headers = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW + offset)
    assert verifier_for(keys, skew=600).verify(headers, "GET", PATH, b"", now=NOW)


def test_sqlite_nonce_store_survives_reopening(
    tmp_path: Path, keys: dict[str, Ed25519PrivateKey]
) -> None:
    headers = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW)
    with SQLiteNonceStore(tmp_path / "nonces.db") as store:
        verifier_for(keys, nonce_store=store).verify(headers, "GET", PATH, b"", now=NOW)
    with SQLiteNonceStore(tmp_path / "nonces.db") as store:
        with pytest.raises(ReplayedMessage, match="replayed"):
            verifier_for(keys, nonce_store=store).verify(headers, "GET", PATH, b"", now=NOW + 1)
        fresh = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW + 1000)
        verifier_for(keys, nonce_store=store).verify(fresh, "GET", PATH, b"", now=NOW + 1000)
        assert store.add("st-mary", "0" * 32, int(NOW), prune_before=NOW + 1)  # old one pruned


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_concurrent_replays_accept_exactly_one(
    tmp_path: Path, keys: dict[str, Ed25519PrivateKey], backend: str
) -> None:
    store = SQLiteNonceStore(tmp_path / "n.db") if backend == "sqlite" else None
    verifier = verifier_for(keys, nonce_store=store)
    headers = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"", now=NOW)
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            verifier.verify(headers, "GET", PATH, b"", now=NOW)
            outcomes.append("ok")
        except ReplayedMessage:
            outcomes.append("replay")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if store is not None:
        store.close()
    assert sorted(outcomes) == ["ok"] + ["replay"] * 7


# --- signed payloads ------------------------------------------------------------------


def test_signed_payload_round_trip_and_tampering(keys: dict[str, Ed25519PrivateKey]) -> None:
    token = sign_payload(keys["st-mary"], "st-mary", {"task": "t1", "count": 42}, now=NOW)
    claims = verify_payload(token, keys["st-mary"].public_key(), sender="st-mary")
    assert claims == {"task": "t1", "count": 42, "iss": "st-mary", "iat": int(NOW)}
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify_payload(token, keys["city-lab"].public_key())
    with pytest.raises(InvalidSignature, match="signed by 'st-mary', not 'city-lab'"):
        verify_payload(token, keys["st-mary"].public_key(), sender="city-lab")
    head, _, signature = token.split(".")
    forged = sign_payload(keys["st-mary"], "st-mary", {"task": "t1", "count": 0}).split(".")[1]
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify_payload(f"{head}.{forged}.{signature}", keys["st-mary"].public_key())
    with pytest.raises(ValueError, match="reserved"):
        sign_payload(keys["st-mary"], "st-mary", {"iss": "city-lab"})


def test_request_and_payload_tokens_are_not_interchangeable(
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    payload = sign_payload(keys["st-mary"], "st-mary", {"method": "GET", "path": PATH})
    with pytest.raises(InvalidSignature, match="not an EdDSA healthmesh-request"):
        verifier_for(keys).verify({HEADER: payload}, "GET", PATH, b"")
    request = sign_request(keys["st-mary"], "st-mary", "GET", PATH, b"")[HEADER]
    with pytest.raises(InvalidSignature, match="not an EdDSA healthmesh-payload"):
        verify_payload(request, keys["st-mary"].public_key())


# --- sealing --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def test_sealing_round_trip(tmp_path: Path) -> None:
    key = generate_box_key(tmp_path / "box.pem", passphrase="pw")
    assert stat.S_IMODE((tmp_path / "box.pem").stat().st_mode) == 0o600
    recipient = load_box_public_key(box_public_pem(key))
    envelope = seal(recipient, b'{"resourceType":"Patient"}', aad=b"task-1")
    assert b"Patient" not in envelope and envelope[:5] == b"HMSL\x01"
    assert len(envelope) == 65 + len(b'{"resourceType":"Patient"}')
    loaded = load_box_key(tmp_path / "box.pem", passphrase="pw")
    assert open_sealed(loaded, envelope, aad=b"task-1") == b'{"resourceType":"Patient"}'
    assert open_sealed(loaded, seal(recipient, b"")) == b""
    assert seal(recipient, b"same") != seal(recipient, b"same")


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda e: flip(e, len(e) - 20), "does not open"),  # ciphertext
        (lambda e: flip(e, len(e) - 1), "does not open"),  # tag
        (lambda e: flip(e, 40), "does not open"),  # nonce
        (lambda e: flip(e, 10), "does not open|invalid ephemeral key"),  # ephemeral key
        (lambda e: e[:4] + b"\x02" + e[5:], "unsupported sealed envelope version 2"),
        (lambda e: b"XXXX" + e[4:], "not a healthmesh sealed envelope"),
        (lambda e: e[:-1], "does not open"),
        (lambda e: e[:60], "truncated"),
        (lambda e: b"", "truncated"),
    ],
)
def test_tampered_envelope_is_refused(box: X25519PrivateKey, tamper, error: str) -> None:
    envelope = seal(box.public_key(), b"patient-level rows " * 4, aad=b"task-1")
    with pytest.raises(DecryptionFailed, match=error):
        open_sealed(box, tamper(envelope), aad=b"task-1")


def test_wrong_aad_or_recipient_is_refused(box: X25519PrivateKey) -> None:
    envelope = seal(box.public_key(), b"rows", aad=b"task-1")
    with pytest.raises(DecryptionFailed, match="does not open"):
        open_sealed(box, envelope, aad=b"task-2")
    with pytest.raises(DecryptionFailed, match="does not open"):
        open_sealed(X25519PrivateKey.generate(), envelope, aad=b"task-1")
