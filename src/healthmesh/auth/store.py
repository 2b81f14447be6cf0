"""The node's OAuth records in ``DIR/auth.sqlite``: clients, users, codes, refresh tokens.

- **Clients** (apps and backend services): an id, the organisation they act for, the
  scopes and purposes of use they may be granted, and either a public key set (JWKS, for
  SMART Backend Services' ``private_key_jwt``) or redirect URIs (interactive apps using
  the authorization code flow with PKCE; public clients, no secret).
- **Users** (clinicians, researchers, data stewards, administrators, patients): a
  password hashed with Argon2id (argon2-cffi), an optional TOTP second factor (pyotp),
  a role, an organisation, and for patients their Patient id. Five failed sign-ins lock
  the account for five minutes.
- **Authorization codes** and **refresh tokens** are stored as SHA-256 hashes only;
  a code is single-use and lives 60 s; a refresh token is single-use (rotated on every
  use) and re-using a spent one revokes its whole family (the token was stolen).
- **Client assertion ids** (``jti``) are kept until they expire, so an assertion cannot
  be replayed.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from healthmesh.errors import ConfigError

__all__ = ["ROLES", "AuthStore", "Client", "Grant", "User"]

ROLES = {
    # role: (the widest scopes it may hold, its default purpose of use)
    "patient": ("patient/*.rs patient/Consent.cruds patient/QuestionnaireResponse.cru",
                "PATRQT"),
    "clinician": ("user/*.cruds", "TREAT"),
    "researcher": ("user/*.rs", "HRESCH"),
    "steward": ("user/*.rs", "HOPERAT"),
    "admin": ("user/*.cruds", "HOPERAT"),
}
CODE_SECONDS = 60
REFRESH_SECONDS = 8 * 3600
LOCK_AFTER = 5
LOCK_SECONDS = 300
SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, name TEXT, org TEXT, scopes TEXT, purposes TEXT,
    jwks TEXT, redirect_uris TEXT, created INTEGER, disabled INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password TEXT, role TEXT, org TEXT, patient TEXT, totp TEXT,
    created INTEGER, disabled INTEGER DEFAULT 0, failures INTEGER DEFAULT 0,
    locked_until INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS codes (
    code TEXT PRIMARY KEY, grant_json TEXT, redirect_uri TEXT, challenge TEXT,
    expires INTEGER, used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token TEXT PRIMARY KEY, family TEXT, grant_json TEXT, expires INTEGER,
    used INTEGER DEFAULT 0, revoked INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh_tokens (family);
CREATE TABLE IF NOT EXISTS assertions (client_id TEXT, jti TEXT, expires INTEGER,
    PRIMARY KEY (client_id, jti));
"""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    org: str | None
    scopes: str
    purposes: tuple[str, ...]
    jwks: dict[str, Any] | None
    redirect_uris: tuple[str, ...]
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    org: str | None
    patient: str | None
    has_totp: bool
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code or refresh token stands for."""

    client_id: str
    username: str
    scope: str
    purpose: str | None

    def to_json(self) -> str:
        return orjson.dumps([self.client_id, self.username, self.scope, self.purpose]).decode()

    @classmethod
    def from_json(cls, text: str) -> Grant:
        client_id, username, scope, purpose = orjson.loads(text)
        return cls(client_id, username, scope, purpose)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AuthStore:
    """OAuth records of one node (thread-safe; several processes may share the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()
        try:
            self._db = sqlite3.connect(path, timeout=10, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the OAuth store {path}: {exc}") from None
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- clients ----------------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        self._run(
            "INSERT OR REPLACE INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (client.client_id, client.name, client.org, client.scopes,
             " ".join(client.purposes), orjson.dumps(client.jwks).decode() if client.jwks
             else None, " ".join(client.redirect_uris), int(time.time()), int(client.disabled)),
        )

    def client(self, client_id: str) -> Client | None:
        rows = self._run("SELECT client_id, name, org, scopes, purposes, jwks, redirect_uris, "
                         "disabled FROM clients WHERE client_id = ?", (client_id,))
        if not rows:
            return None
        cid, name, org, scopes, purposes, jwks, uris, disabled = rows[0]
        return Client(cid, name, org, scopes, tuple(purposes.split()),
                      orjson.loads(jwks) if jwks else None, tuple(uris.split()), bool(disabled))

    def clients(self) -> list[Client]:
        ids = [r[0] for r in self._run("SELECT client_id FROM clients ORDER BY client_id")]
        return [c for c in (self.client(i) for i in ids) if c is not None]

    def use_assertion(self, client_id: str, jti: str, expires: int) -> bool:
        """Record a client assertion id; False if it was used before (a replay)."""
        now = int(time.time())
        with self._lock:
            self._db.execute("DELETE FROM assertions WHERE expires < ?", (now - 600,))
            try:
                self._db.execute("INSERT INTO assertions VALUES (?, ?, ?)",
                                 (client_id, jti, expires))
            except sqlite3.IntegrityError:
                return False
        return True

    # -- users ------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str, *, org: str | None = None,
                 patient: str | None = None, totp: bool = False) -> str | None:
        """Create or replace a user; returns the TOTP secret when ``totp`` is asked for."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not '{role}'")
        if role == "patient" and not patient:
            raise ConfigError("a patient user needs the id of their Patient record")
        if len(password) < 12:
            raise ConfigError("passwords must have at least 12 characters")
        secret = pyotp.random_base32() if totp else None
        self._run("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0)",
                  (username, self._hasher.hash(password), role, org, patient, secret,
                   int(time.time())))
        return secret

    def user(self, username: str) -> User | None:
        rows = self._run("SELECT username, role, org, patient, totp, disabled FROM users "
                         "WHERE username = ?", (username,))
        if not rows:
            return None
        name, role, org, patient, totp, disabled = rows[0]
        return User(name, role, org, patient, totp is not None, bool(disabled))

    def user_summaries(self) -> list[tuple[str, str, bool]]:
        """(user name, role, has a second factor) of every active user."""
        rows = self._run("SELECT username, role, totp IS NOT NULL FROM users "
                         "WHERE disabled = 0 ORDER BY username")
        return [(name, role, bool(totp)) for name, role, totp in rows]

    def check_password(self, username: str, password: str, otp: str | None) -> User | None:
        """The user if the password (and the TOTP code, when enrolled) is right."""
        rows = self._run("SELECT password, totp, disabled, failures, locked_until FROM users "
                         "WHERE username = ?", (username,))
        now = int(time.time())
        if not rows:
            self._hasher.hash(password)  # the same work as for a real user: no timing oracle
            return None
        stored, totp, disabled, failures, locked_until = rows[0]
        if disabled or locked_until > now:
            return None
        try:
            self._hasher.verify(stored, password)
            ok = totp is None or (otp is not None and pyotp.TOTP(totp).verify(otp, valid_window=1))
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            failures += 1
            lock = now + LOCK_SECONDS if failures >= LOCK_AFTER else 0
            self._run("UPDATE users SET failures = ?, locked_until = ? WHERE username = ?",
                      (0 if lock else failures, lock, username))
            return None
        self._run("UPDATE users SET failures = 0 WHERE username = ?", (username,))
        return self.user(username)

    # -- codes and refresh tokens -----------------------------------------------------

    def new_code(self, grant: Grant, redirect_uri: str, challenge: str) -> str:
        code = secrets.token_urlsafe(32)
        self._run("INSERT INTO codes VALUES (?, ?, ?, ?, ?, 0)",
                  (_hash(code), grant.to_json(), redirect_uri, challenge,
                   int(time.time()) + CODE_SECONDS))
        return code

    def take_code(self, code: str) -> tuple[Grant, str, str] | None:
        """(grant, redirect_uri, PKCE challenge) of an unused, unexpired code; single use."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE codes SET used = 1 WHERE code = ? AND used = 0 AND expires >= ? "
                "RETURNING grant_json, redirect_uri, challenge", (_hash(code), int(time.time())))
            row = cur.fetchone()
        if row is None:
            return None
        return Grant.from_json(row[0]), row[1], row[2]

    def new_refresh(self, grant: Grant, family: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        self._run("INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, 0, 0)",
                  (_hash(token), family or secrets.token_hex(8), grant.to_json(),
                   int(time.time()) + REFRESH_SECONDS))
        return token

    def rotate_refresh(self, token: str) -> tuple[Grant, str] | None:
        """Spend a refresh token: (grant, new refresh token), or None if it is not valid.
        A second use of a spent token revokes every token of its family."""
        digest = _hash(token)
        with self._lock:
            row = self._db.execute(
                "SELECT family, grant_json, expires, used, revoked FROM refresh_tokens "
                "WHERE token = ?", (digest,)).fetchone()
            if row is None:
                return None
            family, grant_json, expires, used, revoked = row
            if used or revoked:
                self._db.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?",
                                 (family,))
                return None
            if expires < time.time():
                return None
            self._db.execute("UPDATE refresh_tokens SET used = 1 WHERE token = ?", (digest,))
        grant = Grant.from_json(grant_json)
        return grant, self.new_refresh(grant, family)
