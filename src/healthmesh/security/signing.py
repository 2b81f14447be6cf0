"""Signed node-to-node HTTP requests and signed detached payloads (JWS, EdDSA/ed25519).

Every request between nodes and the hub carries one header, in the spirit of X-Road's
non-repudiation: the sender signs what it asks for, so the receiver can prove later
who asked for what::

    X-Healthmesh-Signature: <compact JWS, alg EdDSA, typ healthmesh-request+jwt>
        {"iss": sender org id, "method": "POST", "path": "/fhir/Patient?name=x",
         "body": base64url(sha256(body)), "iat": unix seconds, "nonce": 32 hex chars}

``path`` is the request target exactly as sent: path plus ``?query`` when there is
one; the receiver must pass the raw target it received. A receiver accepts a request
once: its nonce is remembered (in memory, or in SQLite to survive restarts) for twice
the allowed clock skew, and a timestamp outside the skew is refused, so an old
request cannot be replayed after its nonce is forgotten.

Task results and agreements are signed as detached objects with :func:`sign_payload`
(typ ``healthmesh-payload+jwt``); the two token types are never accepted for each other.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.security.errors import InvalidSignature, ReplayedMessage, SecurityError

__all__ = [
    "SIGNATURE_HEADER",
    "MemoryNonceStore",
    "NonceStore",
    "RequestVerifier",
    "SQLiteNonceStore",
    "VerifiedRequest",
    "body_digest",
    "sign_payload",
    "sign_request",
    "unverified_sender",
    "verify_payload",
]

SIGNATURE_HEADER = "X-Healthmesh-Signature"
REQUEST_TYPE = "healthmesh-request+jwt"
PAYLOAD_TYPE = "healthmesh-payload+jwt"
ALGORITHM = "EdDSA"
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
"""Registered JWT claim names a signed payload may not use itself."""

_NONCE = re.compile(r"[0-9a-f]{32}")


def body_digest(body: bytes) -> str:
    """The base64url (unpadded) SHA-256 of ``body``, as signed in requests."""
    digest = hashlib.sha256(body).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_request(
    key: Ed25519PrivateKey,
    sender: str,
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """The headers that sign a request (``path`` includes the query string, if any)."""
    claims = {
        "iss": sender,
        "method": method.upper(),
        "path": path,
        "body": body_digest(body),
        "iat": int(time.time() if now is None else now),
        "nonce": secrets.token_hex(16),
    }
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": REQUEST_TYPE})
    return {SIGNATURE_HEADER: token}


# --- nonce stores ---------------------------------------------------------------------


class NonceStore(Protocol):
    """Remembers the nonces of accepted requests."""

    def add(self, sender: str, nonce: str, iat: int, *, prune_before: float) -> bool:
        """Record a nonce; False if it was already there. Forget nonces with
        ``iat < prune_before`` first."""
        ...


class MemoryNonceStore:
    """Nonces in a dict, forgotten by age; lost when the process ends. Thread-safe."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._by_age: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def add(self, sender: str, nonce: str, iat: int, *, prune_before: float) -> bool:
        """Record a nonce; False if it was already there."""
        with self._lock:
            while self._by_age and self._by_age[0][0] < prune_before:
                _, old_sender, old_nonce = heapq.heappop(self._by_age)
                self._seen.discard((old_sender, old_nonce))
            if (sender, nonce) in self._seen:
                return False
            self._seen.add((sender, nonce))
            heapq.heappush(self._by_age, (iat, sender, nonce))
            return True

    def __len__(self) -> int:
        return len(self._seen)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonce (
    sender TEXT NOT NULL,
    nonce TEXT NOT NULL,
    iat INTEGER NOT NULL,
    PRIMARY KEY (sender, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonce_by_iat ON nonce (iat);
"""


class SQLiteNonceStore:
    """Nonces in a SQLite table, so replay protection survives restarts.

    Thread-safe; several processes may share the file (the primary key decides).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise SecurityError(f"cannot open the nonce store {self.path}: {exc}") from None

    def add(self, sender: str, nonce: str, iat: int, *, prune_before: float) -> bool:
        """Record a nonce; False if it was already there."""
        with self._lock:
            try:
                self._conn.execute("DELETE FROM nonce WHERE iat < ?", (prune_before,))
                self._conn.execute(
                    "INSERT INTO nonce (sender, nonce, iat) VALUES (?, ?, ?)",
                    (sender, nonce, iat),
                )
            except sqlite3.IntegrityError:
                return False
            except sqlite3.Error as exc:
                raise SecurityError(f"the nonce store {self.path} failed: {exc}") from None
            return True

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteNonceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- verifying requests ---------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature, target, body and freshness were checked."""

    sender: str
    nonce: str
    iat: int
    token: str


class RequestVerifier:
    """Checks signed requests; ``public_key_for(sender)`` gives a member's key or None.

    Timestamps may differ from the local clock by ``skew`` seconds either way.
    Thread-safe if ``public_key_for`` is.
    """

    def __init__(
        self,
        public_key_for: Callable[[str], Ed25519PublicKey | None],
        *,
        skew: float = 300,
        nonce_store: NonceStore | None = None,
    ) -> None:
        if skew <= 0:
            raise ValueError("skew must be positive")
        self.public_key_for = public_key_for
        self.skew = skew
        self.nonce_store: NonceStore = (
            nonce_store if nonce_store is not None else MemoryNonceStore()
        )

    def verify(
        self,
        headers: Mapping[str, str],
        method: str,
        path: str,
        body: bytes,
        *,
        now: float | None = None,
    ) -> VerifiedRequest:
        """Check a received request; raises :class:`InvalidSignature` or
        :class:`ReplayedMessage`. ``path`` is the raw target, query string included."""
        instant = time.time() if now is None else now
        token = _header(headers, SIGNATURE_HEADER)
        claims = self._verified_claims(token)
        _check_target(claims, method, path, body)
        sender, nonce, iat = claims["iss"], claims["nonce"], claims["iat"]
        age = instant - iat
        if abs(age) > self.skew:
            when = f"{age:.0f}s ago" if age > 0 else f"{-age:.0f}s in the future"
            raise ReplayedMessage(
                f"the request from {sender!r} was signed {when}; only ±{self.skew:.0f}s "
                "is accepted (check both clocks)"
            )
        if not self.nonce_store.add(sender, nonce, iat, prune_before=instant - 2 * self.skew):
            raise ReplayedMessage(f"the request from {sender!r} with nonce {nonce} was replayed")
        return VerifiedRequest(sender, nonce, iat, token)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        sender = _token_sender(token, REQUEST_TYPE)
        key = self.public_key_for(sender)
        if key is None:
            raise InvalidSignature(f"the request comes from unknown sender {sender!r}")
        claims = _decode(token, key, f"the request signature of {sender!r}")
        _check_request_claims(claims)
        return claims


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    if not value:
        raise InvalidSignature(f"the request has no {name} header")
    return value


def _check_request_claims(claims: dict[str, Any]) -> None:
    for name in ("method", "path", "body"):
        if not isinstance(claims.get(name), str):
            raise InvalidSignature(f"the request signature has no {name!r} claim")
    iat = claims.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise InvalidSignature("the request signature has no integer 'iat' claim")
    if not isinstance(claims.get("nonce"), str) or not _NONCE.fullmatch(claims["nonce"]):
        raise InvalidSignature("the request signature has no 128-bit hex 'nonce' claim")


def _check_target(claims: dict[str, Any], method: str, path: str, body: bytes) -> None:
    if claims["method"] != method.upper():
        raise InvalidSignature(
            f"the request was signed for method {claims['method']}, not {method.upper()}"
        )
    if claims["path"] != path:
        raise InvalidSignature(f"the request was signed for {claims['path']!r}, not {path!r}")
    if claims["body"] != body_digest(body):
        raise InvalidSignature("the request body is not the body that was signed")


# --- signed payloads ------------------------------------------------------------------


def sign_payload(
    key: Ed25519PrivateKey, sender: str, payload: Mapping[str, Any], *, now: float | None = None
) -> str:
    """A compact JWS of ``payload`` plus ``iss`` (sender) and ``iat`` claims.

    ``payload`` must be JSON-serialisable and may not use registered JWT claim names.
    """
    clash = sorted(RESERVED_CLAIMS & payload.keys())
    if clash:
        raise ValueError(f"payload keys {clash} are reserved JWT claims")
    claims = {**payload, "iss": sender, "iat": int(time.time() if now is None else now)}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": PAYLOAD_TYPE})


def unverified_sender(token: str) -> str:
    """Who claims to have signed a payload token, to look up their key (not verified)."""
    return _token_sender(token, PAYLOAD_TYPE)


def verify_payload(
    token: str, public_key: Ed25519PublicKey, *, sender: str | None = None
) -> dict[str, Any]:
    """The claims of a signed payload (the payload plus ``iss`` and ``iat``).

    Raises :class:`InvalidSignature` if the token is malformed, not a payload token,
    not signed by ``public_key``, or (when given) not issued by ``sender``.
    """
    claimed = _token_sender(token, PAYLOAD_TYPE)
    if sender is not None and claimed != sender:
        raise InvalidSignature(f"the payload was signed by {claimed!r}, not {sender!r}")
    claims = _decode(token, public_key, f"the payload signature of {claimed!r}")
    if not isinstance(claims.get("iat"), int):
        raise InvalidSignature("the signed payload has no integer 'iat' claim")
    return claims


# --- JWS helpers ----------------------------------------------------------------------


def _token_sender(token: str, typ: str) -> str:
    """The unverified ``iss`` of a token of type ``typ``."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidSignature("the signature is not a well-formed JWS") from None
    if header.get("alg") != ALGORITHM or header.get("typ") != typ:
        raise InvalidSignature(f"the signature is not an EdDSA {typ} token")
    sender = claims.get("iss")
    if not isinstance(sender, str) or not sender:
        raise InvalidSignature("the signature names no sender ('iss')")
    return sender


def _decode(token: str, key: Ed25519PublicKey, what: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"verify_iat": False}
        )
    except jwt.PyJWTError as exc:
        raise InvalidSignature(f"{what} does not verify: {exc}") from None
    return claims
