"""Project keys for keyed pseudonyms and date shifts (HMAC-SHA-256).

A key is 32 random bytes held by the node (or by a trusted third party) for one project
or agreement: the same patient gets the same pseudonym inside one project and unlinkable
pseudonyms across projects. The key file holds the key as 64 hex digits on one line and
is created with mode 0600; a key file other users can read is refused (unlike the node's
signing key, which :mod:`healthmesh.security.keys` only warns about: a leaked project key
undoes every pseudonym of the project, and refusing costs nothing at run time).

Each use of the key gets its own sub-key (``HMAC(key, label)``), so a pseudonym tells
nothing about a date offset and the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from healthmesh.privacy.deid.errors import DeidKeyError
from healthmesh.security.keys import key_file_warnings

__all__ = ["KEY_BYTES", "DeidKey", "generate_key_file", "load_key_file"]

KEY_BYTES = 32
_LABELS = ("ids", "identifiers", "dates", "extensions")


@dataclass(frozen=True)
class DeidKey:
    """A project key and the sub-keys derived from it.

    ``ephemeral`` keys are made for one run (Safe Harbor without a key file): ids stay
    consistent within the run and nobody can link or reverse them afterwards.
    """

    secret: bytes = field(repr=False)
    ephemeral: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            raise DeidKeyError(f"a de-identification key is {KEY_BYTES} bytes")

    @classmethod
    def one_time(cls) -> DeidKey:
        """A random key that is never stored."""
        return cls(secrets.token_bytes(KEY_BYTES), ephemeral=True)

    def subkey(self, label: str) -> bytes:
        """The sub-key for one use (``ids``, ``identifiers``, ``dates``, ``extensions``)."""
        if label not in _LABELS:
            raise DeidKeyError(f"unknown sub-key {label!r}")
        return hmac.digest(self.secret, b"healthmesh-deid-v1:" + label.encode(), "sha256")

    @property
    def fingerprint(self) -> str:
        """A short public name of the key (for audit records and reports), not the key."""
        return hashlib.sha256(b"healthmesh-deid-key:" + self.secret).hexdigest()[:16]


def generate_key_file(path: Path | str) -> DeidKey:
    """Create a new key in a new file ``path`` (mode 0600); never replaces a file."""
    path = Path(path)
    key = DeidKey(secrets.token_bytes(KEY_BYTES))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DeidKeyError(f"{path} already exists; refusing to replace a key") from None
    except OSError as exc:
        raise DeidKeyError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(key.secret.hex() + "\n")
    return key


def load_key_file(path: Path | str) -> DeidKey:
    """The key in ``path``; refuses a missing, malformed or group/world-readable file."""
    path = Path(path)
    problems = key_file_warnings(path)
    if problems:
        raise DeidKeyError("; ".join(problems) + " (refusing to use this pseudonym key)")
    try:
        text = path.read_bytes()[: 4 * KEY_BYTES].decode("ascii").strip()
        secret = bytes.fromhex(text)
    except OSError as exc:
        raise DeidKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise DeidKeyError(f"{path} is not a key file (expected {2 * KEY_BYTES} hex "
                           "digits; create one with 'healthmesh deid-keygen')") from None
    if len(secret) != KEY_BYTES:
        raise DeidKeyError(f"{path} holds {len(secret)} bytes; a key is {KEY_BYTES} bytes")
    return DeidKey(secret)
