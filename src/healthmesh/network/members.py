"""Who is who in a network: membership certificates, identities and signed objects.

Every member (node, hub, researcher) holds an ed25519 key and a membership
certificate signed by the network authority. :class:`MemberDirectory` turns an
organisation reference into a verified public key — checking the certificate
against the authority's certificate and its current revocation list each time the
list changes — and checks signatures over agreements and task results.
:class:`Identity` is one's own side: key, certificate, trust anchor and hub URL,
loaded from a credentials file, and able to sign requests and objects.

Credentials file (JSON; paths relative to the file)::

    {"org": "Organization/uni-research", "hub": "http://127.0.0.1:8700",
     "key": "key.pem", "cert": "member-cert.pem", "ca": "ca-cert.pem"}
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.errors import ConfigError, HealthmeshError
from healthmesh.network.agreements import Agreement, AgreementError, body_digest
from healthmesh.security import (
    Membership,
    load_private_key,
    sign_payload,
    sign_request,
    verify_membership,
    verify_payload,
)

__all__ = [
    "Identity",
    "MemberDirectory",
    "result_digest",
    "sign_agreement",
    "verify_agreement_signatures",
]


def result_digest(result: Any) -> str:
    """Base64url SHA-256 of a result's canonical JSON (what a node's signature covers)."""
    canonical = orjson.dumps(result, option=orjson.OPT_SORT_KEYS)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass
class MemberDirectory:
    """Verified public keys of members, from their certificates and the CRL."""

    ca_pem: bytes
    crl_path: Path | None = None
    lookup: Callable[[str], str | None] = lambda org: None
    _crl: tuple[float, bytes | None] = (0.0, None)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_folder(cls, folder: Path) -> MemberDirectory:
        ca = folder / "ca-cert.pem"
        if not ca.exists():
            raise ConfigError(f"{folder}: no ca-cert.pem (the network authority's certificate)")
        return cls(ca.read_bytes(), folder / "crl.pem")

    def crl(self) -> bytes | None:
        """The current revocation list (re-read when the file changes)."""
        if self.crl_path is None or not self.crl_path.exists():
            return None
        mtime = self.crl_path.stat().st_mtime
        with self._lock:
            if self._crl[0] != mtime:
                self._crl = (mtime, self.crl_path.read_bytes())
            return self._crl[1]

    def verify_cert(self, cert_pem: str) -> Membership:
        """A certificate's membership, verified against the authority and the CRL."""
        return verify_membership(cert_pem.encode(), self.ca_pem, self.crl())

    def membership(self, org: str) -> Membership:
        cert = self.lookup(org)
        if cert is None:
            raise HealthmeshError(f"{org} is not a member of this network")
        # verified on every use (an ed25519 check, ~0.1 ms): expiry and revocation apply
        # at once, with no cache to go stale
        membership = verify_membership(cert.encode(), self.ca_pem, self.crl())
        if f"Organization/{membership.org_id}" != org:
            raise HealthmeshError(f"the certificate on file for {org} names "
                                  f"Organization/{membership.org_id}")
        return membership

    def public_key(self, org: str) -> Ed25519PublicKey:
        return self.membership(org).public_key

    def public_key_or_none(self, org: str) -> Ed25519PublicKey | None:
        """For the request verifier: None for an unknown sender; revoked or expired
        certificates raise (so the refusal names the reason)."""
        if self.lookup(org) is None:
            return None
        return self.public_key(org)

    def check_result_signature(self, site: str, task_id: str, result: Any,
                               signature: str) -> None:
        """Verify a node's signature over a task result (raises on mismatch)."""
        claims = verify_payload(signature, self.public_key(site))
        if claims.get("iss") != site or claims.get("task") != task_id or (
                claims.get("digest") != result_digest(result)):
            raise HealthmeshError(f"the result signature of {site} does not match the result")


def verify_agreement_signatures(agreement: Agreement,
                                public_key: Callable[[str], Ed25519PublicKey], *,
                                require_all: bool = True) -> None:
    """Check every party's signature over the agreement body (raises AgreementError)."""
    digest = body_digest(agreement)
    for party in agreement.parties():
        token = agreement.signatures.get(party)
        if token is None:
            if require_all:
                raise AgreementError(f"agreement {agreement.id} is not signed by {party}")
            continue
        try:
            claims = verify_payload(token, public_key(party))
        except HealthmeshError as exc:
            raise AgreementError(f"signature of {party} on {agreement.id}: {exc}") from None
        if claims.get("agreement") != agreement.id or claims.get("digest") != digest:
            raise AgreementError(f"the signature of {party} does not cover these terms "
                                 f"of {agreement.id}")
    extra = sorted(set(agreement.signatures) - set(agreement.parties()))
    if extra:
        raise AgreementError(f"signatures from non-parties: {', '.join(extra)}")


def sign_agreement(agreement: Agreement, identity: Identity) -> Agreement:
    """The agreement with ``identity``'s signature added."""
    token = sign_payload(identity.key, identity.org,
                         {"agreement": agreement.id, "digest": body_digest(agreement)})
    return agreement.with_signature(identity.org, token)


@dataclass
class Identity:
    """A member's own key, certificate, trust anchor and hub."""

    org: str
    key: Ed25519PrivateKey
    cert_pem: str
    ca_pem: bytes
    hub_url: str
    tls_ca: Path | None = None  # trust anchor for the hub's TLS certificate (None: system)

    @classmethod
    def load(cls, credentials: Path) -> Identity:
        """Read a credentials file (see the module docstring)."""
        try:
            data = orjson.loads(credentials.read_bytes())
            base = credentials.parent
            return cls(
                org=data["org"], key=load_private_key(base / data["key"]),
                cert_pem=(base / data["cert"]).read_text(), ca_pem=(base / data["ca"]).read_bytes(),
                hub_url=data.get("hub", "").rstrip("/"),
                tls_ca=base / data["tls_ca"] if data.get("tls_ca") else None,
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"credentials {credentials}: {exc}") from None

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_request(self.key, self.org, method, path, body)

    def sign(self, payload: dict[str, Any]) -> str:
        return sign_payload(self.key, self.org, payload)


def write_credentials(path: Path, *, org: str, hub: str, key: str, cert: str, ca: str,
                      tls_ca: str | None = None) -> None:
    """Write a credentials file (paths relative to its folder; ``tls_ca``: the certificate
    that signed the hub's TLS certificate, when it is not in the system's trust store)."""
    data = {"org": org, "hub": hub, "key": key, "cert": cert, "ca": ca}
    if tls_ca:
        data["tls_ca"] = tls_ca
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)
