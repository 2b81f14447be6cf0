"""The network authority and the membership certificates it issues.

The authority keeps an ed25519 key and a self-signed X.509 CA certificate in a folder::

    FOLDER/                      mode 0700
    FOLDER/authority-key.pem     PKCS#8 PEM, mode 0600, optionally passphrase-encrypted
    FOLDER/authority-cert.pem    self-signed CA certificate (CN=O=network name, 10 years)
    FOLDER/revocations.json      {"<serial hex>": {"reason": ..., "revoked_at": ISO 8601}}

A node asks to join with a certificate signing request (:func:`make_csr`); the authority
answers with a *membership certificate* (:meth:`NetworkAuthority.sign_membership`)::

    subject        CN=<org id>, O=<organisation name>
    SAN            URI urn:healthmesh:org:<org id>
    roles          private extension 1.3.6.1.4.1.55555.1.1, non-critical
    key usage      digitalSignature (critical); basic constraints CA=false (critical)

The roles extension value is the granted roles, sorted and comma-joined, as UTF-8
bytes (``b"lab,provider"``). This is deliberately not DER: roles are short fixed
tokens without commas, generic tools show the value readably as bytes, and no ASN.1
codec is needed. A CSR carries the requested roles in the same extension; the
authority decides what it grants. Anyone checks a certificate with
:func:`verify_membership` against the authority's certificate and revocation list.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from healthmesh.security.errors import InvalidCertificate, RevokedCertificate, SecurityError
from healthmesh.security.keys import Passphrase, generate_key, load_private_key

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "ROLES",
    "ROLES_OID",
    "Membership",
    "MembershipRequest",
    "NetworkAuthority",
    "make_csr",
    "org_urn",
    "read_csr",
    "verify_membership",
]

ROLES = frozenset(
    {"provider", "lab", "payer", "pharmacy", "public-health", "research", "patient-app", "hub"}
)
"""The roles an organisation can hold in the network."""

ROLES_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
"""The private certificate extension that carries roles (UTF-8, comma-joined)."""

KEY_FILE = "authority-key.pem"
CERT_FILE = "authority-cert.pem"
REVOCATIONS_FILE = "revocations.json"
CA_VALIDITY = timedelta(days=3650)
CRL_VALIDITY = timedelta(days=7)
BACKDATE = timedelta(minutes=5)
"""Certificates start a little in the past so that nodes with slow clocks accept them."""

_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URN_PREFIX = "urn:healthmesh:org:"
_PEM = serialization.Encoding.PEM


def org_urn(org_id: str) -> str:
    """The URI that names organisation ``org_id`` in certificates."""
    return f"{_URN_PREFIX}{org_id}"


# --- organisations and roles ---------------------------------------------------------


def _check_org(org_id: str, org_name: str) -> None:
    if not _ORG_ID.fullmatch(org_id):
        raise InvalidCertificate(
            f"organisation id {org_id!r} is not valid: use 1-64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    if not 1 <= len(org_name.encode("utf-8")) <= 64:
        raise InvalidCertificate("organisation name must be 1 to 64 bytes of UTF-8")


def _normalise_roles(roles: Iterable[str]) -> tuple[str, ...]:
    roles = [roles] if isinstance(roles, str) else list(roles)
    unknown = sorted(set(roles) - ROLES)
    if unknown:
        raise InvalidCertificate(
            f"unknown role {unknown[0]!r}; roles are: {', '.join(sorted(ROLES))}"
        )
    if not roles:
        raise InvalidCertificate("a membership needs at least one role")
    return tuple(sorted(set(roles)))


def _roles_extension(roles: tuple[str, ...]) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(ROLES_OID, ",".join(roles).encode("utf-8"))


def _roles_in(extensions: x509.Extensions, what: str) -> tuple[str, ...]:
    try:
        ext = extensions.get_extension_for_oid(ROLES_OID).value
    except x509.ExtensionNotFound:
        raise InvalidCertificate(f"the {what} has no healthmesh roles extension") from None
    assert isinstance(ext, x509.UnrecognizedExtension)
    try:
        text = ext.value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCertificate(f"the roles extension of the {what} is not UTF-8") from None
    return _normalise_roles(text.split(",") if text else [])


def _subject(org_id: str, org_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, org_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
        ]
    )


def _one_attribute(name: x509.Name, oid: x509.ObjectIdentifier, what: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        label = "common name (CN)" if oid == NameOID.COMMON_NAME else "organisation (O)"
        raise InvalidCertificate(f"the {what} must have exactly one {label}")
    return values[0].value


# --- the node side: asking to join ---------------------------------------------------


@dataclass(frozen=True)
class MembershipRequest:
    """What a certificate signing request asks for (the roles are only requested)."""

    org_id: str
    org_name: str
    roles: tuple[str, ...]
    public_key: Ed25519PublicKey


def make_csr(
    node_key: Ed25519PrivateKey, org_id: str, org_name: str, roles: Iterable[str]
) -> bytes:
    """A PEM certificate signing request of organisation ``org_id`` for ``roles``."""
    _check_org(org_id, org_name)
    requested = _normalise_roles(roles)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(org_urn(org_id))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(org_id, org_name))
        .add_extension(san, critical=False)
        .add_extension(_roles_extension(requested), critical=False)
        .sign(node_key, None)
    )
    return csr.public_bytes(_PEM)


def read_csr(csr_pem: bytes | str) -> MembershipRequest:
    """Parse and check a signing request; raises :class:`InvalidCertificate` if unusable."""
    try:
        csr = x509.load_pem_x509_csr(_as_bytes(csr_pem))
    except ValueError:
        raise InvalidCertificate("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise InvalidCertificate("the signing request is not signed by its own key")
    key = csr.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidCertificate("the signing request must carry an ed25519 key")
    org_id = _one_attribute(csr.subject, NameOID.COMMON_NAME, "signing request")
    org_name = _one_attribute(csr.subject, NameOID.ORGANIZATION_NAME, "signing request")
    _check_org(org_id, org_name)
    return MembershipRequest(org_id, org_name, _roles_in(csr.extensions, "request"), key)


# --- the authority --------------------------------------------------------------------


class NetworkAuthority:
    """The network's certificate authority: issues and revokes membership certificates.

    Use :meth:`create` once, then :meth:`open`. Safe to share between threads.
    """

    def __init__(self, folder: Path, key: Ed25519PrivateKey, certificate: x509.Certificate):
        self.folder = folder
        self.key = key
        self.certificate = certificate
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, folder: Path | str, network_name: str, passphrase: Passphrase = None
    ) -> NetworkAuthority:
        """Create a new authority (key and self-signed CA certificate) in ``folder``."""
        folder = Path(folder)
        if not 1 <= len(network_name.encode("utf-8")) <= 64:
            raise SecurityError("the network name must be 1 to 64 bytes of UTF-8")
        if (folder / CERT_FILE).exists() or (folder / KEY_FILE).exists():
            raise SecurityError(f"{folder} already holds a network authority")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_key(folder / KEY_FILE, passphrase)
        certificate = _ca_certificate(key, network_name, _instant(None))
        _write_atomic(folder / CERT_FILE, certificate.public_bytes(_PEM))
        return cls(folder, key, certificate)

    @classmethod
    def open(cls, folder: Path | str, passphrase: Passphrase = None) -> NetworkAuthority:
        """The authority kept in ``folder``; raises :class:`SecurityError` if unusable."""
        folder = Path(folder)
        key = load_private_key(folder / KEY_FILE, passphrase)
        try:
            certificate = x509.load_pem_x509_certificate((folder / CERT_FILE).read_bytes())
        except (OSError, ValueError):
            raise SecurityError(f"cannot read {folder / CERT_FILE}") from None
        if _spki(certificate.public_key()) != _spki(key.public_key()):
            raise InvalidCertificate(f"{folder / CERT_FILE} does not match the authority key")
        return cls(folder, key, certificate)

    @property
    def network_name(self) -> str:
        """The name of the network (the authority certificate's organisation)."""
        return _one_attribute(self.certificate.subject, NameOID.ORGANIZATION_NAME, "CA")

    @property
    def cert_pem(self) -> bytes:
        """The authority's certificate: the trust anchor every node keeps."""
        return self.certificate.public_bytes(_PEM)

    def sign_membership(
        self,
        csr_pem: bytes | str,
        roles: Iterable[str],
        days: int = 365,
        *,
        now: datetime | None = None,
    ) -> bytes:
        """Issue a PEM membership certificate for the request, granting ``roles``.

        The certificate never outlives the authority's own certificate.
        """
        request = read_csr(csr_pem)
        granted = _normalise_roles(roles)
        if days < 1:
            raise InvalidCertificate("a membership must last at least one day")
        start = _instant(now)
        end = min(start + timedelta(days=days), self.certificate.not_valid_after_utc)
        builder = _membership_builder(request, granted, self.certificate, start - BACKDATE, end)
        return builder.sign(self.key, None).public_bytes(_PEM)

    def revoke(
        self,
        serial: int,
        reason: str | x509.ReasonFlags = "unspecified",
        *,
        now: datetime | None = None,
    ) -> None:
        """Revoke the certificate with ``serial`` (a RFC 5280 reason such as
        ``keyCompromise``, ``superseded``, ``cessationOfOperation``). Idempotent."""
        flag = _reason(reason)
        if serial <= 0:
            raise SecurityError(f"{serial} is not a certificate serial number")
        with self._lock:
            revoked = self._revocations()
            if f"{serial:x}" in revoked:
                return
            when = _instant(now).isoformat()
            revoked[f"{serial:x}"] = {"reason": flag.value, "revoked_at": when}
            _write_atomic(self.folder / REVOCATIONS_FILE, json.dumps(revoked, indent=1).encode())

    def revoked_serials(self) -> frozenset[int]:
        """Serial numbers of every revoked certificate."""
        with self._lock:
            return frozenset(int(s, 16) for s in self._revocations())

    def crl_pem(self, *, now: datetime | None = None) -> bytes:
        """A fresh certificate revocation list signed by the authority (valid 7 days)."""
        start = _instant(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(start)
            .next_update(start + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(int(start.timestamp())), critical=False)
            .add_extension(_authority_key_id(self.key), critical=False)
        )
        with self._lock:
            entries = self._revocations()
        for serial, entry in entries.items():
            builder = builder.add_revoked_certificate(_revoked_entry(int(serial, 16), entry))
        return builder.sign(self.key, None).public_bytes(_PEM)

    def _revocations(self) -> dict[str, dict[str, str]]:
        path = self.folder / REVOCATIONS_FILE
        if not path.exists():
            return {}
        try:
            data: dict[str, dict[str, str]] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            raise SecurityError(f"cannot read the revocation records in {path}") from None
        return data


def _ca_certificate(key: Ed25519PrivateKey, network_name: str, now: datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, network_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, network_name),
        ]
    )
    usage = _key_usage(digital_signature=False, key_cert_sign=True, crl_sign=True)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return builder.sign(key, None)


def _membership_builder(
    request: MembershipRequest,
    roles: tuple[str, ...],
    ca: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(org_urn(request.org_id))])
    ca_key = ca.public_key()
    assert isinstance(ca_key, Ed25519PublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(request.org_id, request.org_name))
        .issuer_name(ca.subject)
        .public_key(request.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(san, critical=False)
        .add_extension(_roles_extension(roles), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key), False)
    )


def _key_usage(
    *, digital_signature: bool, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(key: Ed25519PrivateKey) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def _reason(reason: str | x509.ReasonFlags) -> x509.ReasonFlags:
    flag = next((f for f in x509.ReasonFlags if reason in (f, f.value, f.name)), None)
    if flag is None or flag is x509.ReasonFlags.remove_from_crl:
        allowed = ", ".join(f.value for f in x509.ReasonFlags if f.name != "remove_from_crl")
        raise SecurityError(f"unknown revocation reason {reason!r}; use one of: {allowed}")
    return flag


def _revoked_entry(serial: int, entry: dict[str, str]) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(datetime.fromisoformat(entry["revoked_at"]))
    )
    flag = x509.ReasonFlags(entry["reason"])
    if flag is not x509.ReasonFlags.unspecified:  # RFC 5280: omit reasonCode unspecified
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


# --- checking a membership -----------------------------------------------------------


@dataclass(frozen=True)
class Membership:
    """A verified membership certificate: who the organisation is and what it may do."""

    org_id: str
    org_name: str
    roles: tuple[str, ...]
    serial: int
    not_before: datetime
    not_after: datetime
    public_key: Ed25519PublicKey
    cert_pem: bytes

    def has_role(self, role: str) -> bool:
        """Whether the certificate grants ``role``."""
        return role in self.roles


def verify_membership(
    cert_pem: bytes | str,
    ca_cert_pem: bytes | str,
    crl_pem: bytes | str | None = None,
    at: datetime | None = None,
) -> Membership:
    """Check a membership certificate against the network authority and return it.

    Checks: signed by the authority's key, issued under its name, valid at ``at``
    (default now), carries an organisation and roles, and - when a revocation list is
    given - that the list is the authority's, still current, and does not list it.
    Raises :class:`InvalidCertificate` or :class:`RevokedCertificate`.
    """
    instant = _instant(at)
    ca = _load_certificate(ca_cert_pem, "network authority certificate")
    ca_key = _check_authority(ca, instant)
    cert = _load_certificate(cert_pem, "membership certificate")
    _check_issued_by(cert, ca, ca_key)
    _check_validity(cert, instant, "membership certificate")
    membership = _membership_of(cert)
    if crl_pem is not None:
        crl = _load_crl(crl_pem, ca, ca_key, instant)
        _check_not_revoked(crl, membership)
    return membership


def _load_certificate(pem: bytes | str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_as_bytes(pem))
    except ValueError:
        raise InvalidCertificate(f"the {what} is not a PEM X.509 certificate") from None


def _check_authority(ca: x509.Certificate, at: datetime) -> Ed25519PublicKey:
    key = ca.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidCertificate("the network authority certificate has no ed25519 key")
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InvalidCertificate("the network authority certificate is not a CA certificate")
    _check_validity(ca, at, "network authority certificate")
    return key


def _check_issued_by(cert: x509.Certificate, ca: x509.Certificate, key: Ed25519PublicKey) -> None:
    if cert.issuer != ca.subject:
        raise InvalidCertificate(
            f"the certificate was issued by '{cert.issuer.rfc4514_string()}', "
            f"not by this network's authority '{ca.subject.rfc4514_string()}'"
        )
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ED25519:
        raise InvalidCertificate("the certificate is not signed with ed25519")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except crypto_exceptions.InvalidSignature:
        raise InvalidCertificate(
            "the certificate's signature is not the network authority's"
        ) from None


def _check_validity(cert: x509.Certificate, at: datetime, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise InvalidCertificate(
            f"the {what} is not valid before {cert.not_valid_before_utc.isoformat()}"
        )
    if at > cert.not_valid_after_utc:
        raise InvalidCertificate(f"the {what} expired on {cert.not_valid_after_utc.isoformat()}")


def _membership_of(cert: x509.Certificate) -> Membership:
    what = "membership certificate"
    org_id = _one_attribute(cert.subject, NameOID.COMMON_NAME, what)
    org_name = _one_attribute(cert.subject, NameOID.ORGANIZATION_NAME, what)
    _check_org(org_id, org_name)
    _check_org_urn(cert, org_id)
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidCertificate("the membership certificate must carry an ed25519 key")
    return Membership(
        org_id=org_id,
        org_name=org_name,
        roles=_roles_in(cert.extensions, what),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        public_key=key,
        cert_pem=cert.public_bytes(_PEM),
    )


def _check_org_urn(cert: x509.Certificate, org_id: str) -> None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidCertificate("the membership certificate has no organisation URI") from None
    if org_urn(org_id) not in san.get_values_for_type(x509.UniformResourceIdentifier):
        raise InvalidCertificate(
            f"the membership certificate's URI does not name organisation {org_id!r}"
        )


def _load_crl(
    pem: bytes | str, ca: x509.Certificate, key: Ed25519PublicKey, at: datetime
) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(_as_bytes(pem))
    except ValueError:
        raise InvalidCertificate("the revocation list is not a PEM X.509 CRL") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(key):
        raise InvalidCertificate("the revocation list is not signed by the network authority")
    if crl.next_update_utc is None or at > crl.next_update_utc:
        raise InvalidCertificate(
            "the revocation list is out of date; fetch a fresh one from the network authority"
        )
    return crl


def _check_not_revoked(crl: x509.CertificateRevocationList, membership: Membership) -> None:
    entry = crl.get_revoked_certificate_by_serial_number(membership.serial)
    if entry is None:
        return
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        reason = "unspecified"
    raise RevokedCertificate(
        f"the membership certificate of {membership.org_id!r} (serial {membership.serial:x}) "
        f"was revoked on {entry.revocation_date_utc.isoformat()}: {reason}"
    )


# --- small helpers --------------------------------------------------------------------


def _instant(at: datetime | None) -> datetime:
    """``at`` as an aware UTC datetime (naive means UTC; None means now)."""
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii", "replace") if isinstance(pem, str) else pem


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
