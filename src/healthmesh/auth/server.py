"""The node's OAuth 2.0 authorization server, per SMART App Launch v2.

Grants: ``client_credentials`` with a signed JWT client assertion (SMART Backend
Services, ``private_key_jwt``), ``authorization_code`` with PKCE (S256 only; public
clients, for interactive users), and ``refresh_token`` (rotated on every use). The
grant logic lives here; every JOSE operation (assertion and token signatures, expiry,
audience) is PyJWT's. authlib's server side is built for Flask and Django, not for
Starlette, and the three grants are short, so they are written out and tested here.

Every issued token and every refused attempt is written to the node's audit log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt

from healthmesh.audit import AuditRecord
from healthmesh.auth.scopes import ScopeSet, parse_scopes
from healthmesh.auth.store import ROLES, AuthStore, Client, Grant, User
from healthmesh.auth.tokens import TokenService
from healthmesh.errors import FhirError

__all__ = ["ASSERTION_TYPE", "AuthServer", "OAuthError", "TokenResponse"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384", "EdDSA", "RS256", "ES256"]
MAX_ASSERTION_SECONDS = 300
_PURPOSE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class OAuthError(FhirError):
    """An OAuth error response (RFC 6749 §5.2): ``error`` code and description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description, [], status, "security")
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    patient: str | None = None
    purpose: str | None = None

    def body(self) -> dict[str, Any]:
        out = {"access_token": self.access_token, "token_type": "Bearer",
               "expires_in": self.expires_in, "scope": self.scope,
               "refresh_token": self.refresh_token, "patient": self.patient,
               "purpose": self.purpose}
        return {k: v for k, v in out.items() if v is not None}


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class AuthServer:
    """Token issuance for one node."""

    def __init__(self, store: AuthStore, tokens: TokenService, audit: Any,
                 ttl: int) -> None:
        self.store = store
        self.tokens = tokens
        self.audit = audit
        self.ttl = ttl

    # -- helpers ----------------------------------------------------------------------

    def _audit(self, actor: str, action: str, outcome: int | str, *, org: str | None = None,
               purpose: str | None = None, reason: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
        if self.audit is None:
            return
        self.audit.append(AuditRecord(
            actor=actor[:256] or "anonymous", action=action, organisation=org,
            purpose=purpose, decision="permit" if outcome == "success" else "deny",
            reason=reason[:500] if reason else None, outcome=outcome, detail=detail,
        ))

    def _fail(self, actor: str, error: str, description: str, status: int = 400) -> OAuthError:
        self._audit(actor, "token", status, reason=f"{error}: {description}")
        return OAuthError(error, description, status)

    @staticmethod
    def _purpose(asked: str | None, allowed: tuple[str, ...], default: str | None) -> str | None:
        if asked:
            if not set(asked) <= _PURPOSE_CHARS or asked not in allowed:
                raise OAuthError("invalid_request",
                                 f"purpose '{asked[:40]}' is not allowed for this client")
            return asked
        return default

    def _scopes(self, actor: str, asked: str, allowed: str) -> ScopeSet:
        try:
            granted = parse_scopes(asked).within(parse_scopes(allowed))
        except FhirError as exc:
            raise self._fail(actor, "invalid_scope", str(exc)) from None
        if not granted.resource:
            raise self._fail(actor, "invalid_scope",
                             "none of the requested scopes may be granted to this client")
        return granted

    def mint(self, client: Client, scopes: ScopeSet, purpose: str | None, *,
             user: User | None = None, patient: str | None = None, ttl: int | None = None,
             via: str) -> TokenResponse:
        """Issue and audit an access token for ``client`` (and ``user``)."""
        if user is not None and user.role == "patient":
            patient = user.patient
        org = (user.org if user and user.org else None) or client.org
        token, claims = self.tokens.issue(
            subject=user.username if user else client.client_id, client_id=client.client_id,
            scopes=scopes, purpose=purpose, org=org, ttl=ttl or self.ttl,
            role=user.role if user else None, patient=patient,
        )
        self._audit(claims.agent, "token", "success", org=org, purpose=purpose,
                    detail={"grant": via, "scope": str(scopes)[:500], "jti": claims.token_id,
                            "patient": patient})
        return TokenResponse(token, claims.expires - int(time.time()), str(scopes),
                             patient=patient, purpose=purpose)

    # -- client credentials (SMART Backend Services) ----------------------------------

    def client_credentials(self, form: dict[str, str], token_url: str) -> TokenResponse:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise self._fail("anonymous", "invalid_client",
                             f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        client = self._assertion_client(form.get("client_assertion", ""), token_url)
        scopes = self._scopes(client.client_id, form.get("scope", ""), client.scopes)
        try:
            purpose = self._purpose(form.get("purpose"), client.purposes,
                                    client.purposes[0] if client.purposes else None)
        except OAuthError as exc:
            raise self._fail(client.client_id, exc.error, exc.description) from None
        return self.mint(client, scopes, purpose, via="client_credentials")

    def _assertion_client(self, assertion: str, token_url: str) -> Client:
        if not assertion or len(assertion) > 8192:
            raise self._fail("anonymous", "invalid_client", "client_assertion is missing", 401)
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise self._fail("anonymous", "invalid_client",
                             "client_assertion is not a JWT", 401) from None
        client_id = str(unverified.get("iss", ""))[:128]
        client = self.store.client(client_id)
        if client is None or client.disabled or not client.jwks:
            raise self._fail(client_id or "anonymous", "invalid_client",
                             "unknown client, or a client without registered keys", 401)
        key = _key_for(client.jwks, header.get("kid"))
        if key is None:
            raise self._fail(client_id, "invalid_client",
                             "no registered key matches the assertion's kid", 401)
        try:
            claims = jwt.decode(
                assertion, key, algorithms=ASSERTION_ALGORITHMS, audience=token_url,
                issuer=client_id, leeway=30,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise self._fail(client_id, "invalid_client",
                             f"client_assertion is not valid: {exc}", 401) from None
        if claims["sub"] != client_id:
            raise self._fail(client_id, "invalid_client", "assertion sub must equal iss", 401)
        if int(claims["exp"]) > time.time() + MAX_ASSERTION_SECONDS:
            raise self._fail(client_id, "invalid_client",
                             "client_assertion must expire within 5 minutes", 401)
        if not self.store.use_assertion(client_id, str(claims["jti"]), int(claims["exp"])):
            raise self._fail(client_id, "invalid_client",
                             "client_assertion was used before (replay)", 401)
        return client

    # -- authorization code with PKCE -------------------------------------------------

    def authorize(self, client: Client, user: User, params: dict[str, str]) -> str:
        """The code for a signed-in user's approval (the caller validated the client)."""
        role_scopes, role_purpose = ROLES[user.role]
        scopes = self._scopes(user.username, params.get("scope", ""), client.scopes)
        scopes = scopes.within(parse_scopes(_contexts(role_scopes, user)))
        if not scopes.resource:
            raise OAuthError("invalid_scope", "none of the requested scopes fits your role")
        purpose = self._purpose(params.get("purpose"), client.purposes, role_purpose)
        grant = Grant(client.client_id, user.username, str(scopes), purpose)
        return self.store.new_code(grant, params["redirect_uri"], params["code_challenge"])

    def authorization_code(self, form: dict[str, str]) -> TokenResponse:
        client_id = form.get("client_id", "")[:128]
        taken = self.store.take_code(form.get("code", ""))
        if taken is None:
            raise self._fail(client_id, "invalid_grant", "the code is not valid or was used")
        grant, redirect_uri, challenge = taken
        if grant.client_id != client_id or form.get("redirect_uri") != redirect_uri:
            raise self._fail(client_id, "invalid_grant",
                             "client_id or redirect_uri do not match the code")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(
                pkce_challenge(verifier), challenge):
            raise self._fail(client_id, "invalid_grant", "the PKCE code_verifier is wrong")
        return self._from_grant(grant, "authorization_code", None)

    def refresh(self, form: dict[str, str]) -> TokenResponse:
        client_id = form.get("client_id", "")[:128]
        rotated = self.store.rotate_refresh(form.get("refresh_token", ""))
        if rotated is None:
            raise self._fail(client_id, "invalid_grant",
                             "the refresh token is not valid (expired, revoked or reused)")
        grant, new_token = rotated
        if grant.client_id != client_id:
            raise self._fail(client_id, "invalid_grant", "the refresh token is another client's")
        return self._from_grant(grant, "refresh_token", new_token)

    def _from_grant(self, grant: Grant, via: str, refresh: str | None) -> TokenResponse:
        client = self.store.client(grant.client_id)
        user = self.store.user(grant.username)
        if client is None or client.disabled or user is None or user.disabled:
            raise self._fail(grant.username, "invalid_grant", "the client or user is disabled")
        response = self.mint(client, parse_scopes(grant.scope), grant.purpose, user=user,
                             via=via)
        refresh = refresh or self.store.new_refresh(grant)
        return TokenResponse(response.access_token, response.expires_in, response.scope,
                             refresh, response.patient, response.purpose)


def _contexts(role_scopes: str, user: User) -> str:
    """A role's widest scopes; a patient's hold only the patient context."""
    return role_scopes if user.role == "patient" else role_scopes + " " + role_scopes.replace(
        "user/", "patient/")


def _key_for(jwks: dict[str, Any], kid: str | None) -> Any:
    """The client's public key with this ``kid`` (or its only key when there is no kid)."""
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    chosen = [k for k in keys if k.get("kid") == kid] if kid else keys[:1] if len(keys) == 1 \
        else []
    if not chosen:
        return None
    try:
        return jwt.PyJWK(chosen[0]).key
    except jwt.PyJWTError:
        return None
