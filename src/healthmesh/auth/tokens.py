"""Access tokens: short-lived JWTs signed by the node (EdDSA), and what they carry.

The node is its own authorization server: ``DIR/keys/oauth-signing.pem`` (ed25519,
mode 0600, created on first use) signs every access token, and only tokens signed with
it are accepted. ``iss`` and ``aud`` are the node's token audience
``urn:healthmesh:node:<key id>``, so a token of another node (another key) fails its
signature and a token minted for another audience fails its ``aud`` check.

Claims: ``sub`` (client id or user name), ``client_id``, ``scope`` (SMART v2),
``purpose`` (HL7 v3 ActReason), ``org`` (the organisation acting — the consent
recipient), ``role``, ``patient`` (patient context or the patient's own id), ``jti``,
``iat``, ``exp``.

PyJWT does the JOSE work (signing, verifying, expiry and audience checks).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthmesh.auth.scopes import ScopeSet, parse_scopes
from healthmesh.errors import FhirError
from healthmesh.security.errors import SecurityError
from healthmesh.security.keys import generate_key, load_private_key

__all__ = ["AccessClaims", "TokenService", "Unauthorized"]

KEY_FILE = "keys/oauth-signing.pem"
LEEWAY_SECONDS = 30
MAX_TTL_SECONDS = 24 * 3600


class Unauthorized(FhirError):
    """401: no access token, or one that is not valid here."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [], 401, "login")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified access token."""

    subject: str
    client_id: str
    scopes: ScopeSet
    purpose: str | None
    org: str | None
    role: str | None
    patient: str | None
    token_id: str
    expires: int

    @property
    def agent(self) -> str:
        """Who acts, for the audit log: the user (``user:NAME``) or the client."""
        return f"user:{self.subject}" if self.role else f"client:{self.client_id}"


class TokenService:
    """Issues and verifies a node's access tokens."""

    def __init__(self, folder: Path) -> None:
        path = folder / KEY_FILE
        if path.exists():
            self._key: Ed25519PrivateKey = load_private_key(path)
        else:
            try:
                self._key = generate_key(path)
            except SecurityError:  # another process created it first
                self._key = load_private_key(path)
        self._public = self._key.public_key()
        raw = self._public.public_bytes_raw()
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self.audience = f"urn:healthmesh:node:{self.key_id}"

    def jwks(self) -> dict[str, Any]:
        """The public signing key as a JWK Set (``/auth/jwks``)."""
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(self._public, as_dict=True)
        jwk.update({"kid": self.key_id, "use": "sig", "alg": "EdDSA"})
        return {"keys": [jwk]}

    def issue(
        self, *, subject: str, client_id: str, scopes: ScopeSet, purpose: str | None,
        org: str | None, ttl: int, role: str | None = None, patient: str | None = None,
        audience: str | None = None,
    ) -> tuple[str, AccessClaims]:
        """A signed access token and its claims."""
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"token lifetime must be 1 s to {MAX_TTL_SECONDS} s")
        now = int(time.time())
        claims = AccessClaims(subject, client_id, scopes, purpose, org, role, patient,
                              secrets.token_hex(12), now + ttl)
        payload = {
            "iss": self.audience, "aud": audience or self.audience, "sub": subject,
            "client_id": client_id, "scope": str(scopes), "purpose": purpose, "org": org,
            "role": role, "patient": patient, "jti": claims.token_id, "iat": now,
            "exp": claims.expires,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        token = jwt.encode(payload, self._key, algorithm="EdDSA", headers={"kid": self.key_id})
        return token, claims

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token (raises :class:`Unauthorized` otherwise)."""
        if len(token) > 8192:
            raise Unauthorized("The access token is too long")
        try:
            payload = jwt.decode(
                token, self._public, algorithms=["EdDSA"], audience=self.audience,
                issuer=self.audience, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The access token was issued for another audience") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("The access token was not signed by this node") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The access token is not valid: {exc}") from None
        try:
            scopes = parse_scopes(str(payload.get("scope", "")))
        except FhirError:
            raise Unauthorized("The access token carries an invalid scope") from None
        return AccessClaims(
            str(payload["sub"]), str(payload.get("client_id", payload["sub"])), scopes,
            payload.get("purpose"), payload.get("org"), payload.get("role"),
            payload.get("patient"), str(payload["jti"]), int(payload["exp"]),
        )
