"""The node's ed25519 signing key, kept in the node folder.

Layout::

    DIR/keys/                   mode 0700
    DIR/keys/node-ed25519.pem   PKCS#8 PEM, unencrypted, mode 0600

The key is created once, atomically (written to a temporary file, then hard-linked
into place, so two processes starting together end up with the same key). The
public key travels as SubjectPublicKeyInfo PEM; its id is the first 16 hex
characters of the SHA-256 of the 32 raw public key bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.errors import ConfigError
from healthmesh.security import keys as security_keys
from healthmesh.security.errors import SecurityError

__all__ = [
    "KEY_FILE",
    "load_node_key",
    "load_or_create_node_key",
    "load_public_key",
    "public_key_id",
    "public_key_pem",
]

KEY_DIR = "keys"
KEY_FILE = f"{KEY_DIR}/node-ed25519.pem"
"""Where the node key lives, relative to the node folder."""


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id: the first 16 hex chars of SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM text."""
    return security_keys.public_key_pem(public_key)


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse an ed25519 public key from PEM (raises ConfigError if it is not one)."""
    try:
        return security_keys.load_public_key(pem)
    except SecurityError as exc:
        raise ConfigError(str(exc)) from None


def _check_private(path: Path) -> None:
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(
            f"{path} can be read by other users; restrict it with 'chmod 600 {path}'"
        )


def load_node_key(folder: Path) -> Ed25519PrivateKey | None:
    """The node's private key, or None if the node has none yet."""
    path = Path(folder) / KEY_FILE
    if not path.exists():
        return None
    _check_private(path)
    try:  # encrypted keys load with HEALTHMESH_KEY_PASSPHRASE_FILE (security/keys.py)
        key = security_keys.read_key_file(path)
    except SecurityError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an ed25519 key")
    return key


def _key_dir(folder: Path) -> Path:
    keys = Path(folder) / KEY_DIR
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(keys, 0o700)
    return keys


def _write_new_key(path: Path) -> None:
    """Write a fresh key to ``path`` unless one appears there first (encrypted when a key
    passphrase is configured)."""
    try:
        security_keys.write_key_file(path, Ed25519PrivateKey.generate())
    except SecurityError:
        if not path.exists():
            raise
        # another process created the key meanwhile: use theirs


def load_or_create_node_key(folder: Path) -> Ed25519PrivateKey:
    """The node's ed25519 key from ``folder/keys/node-ed25519.pem``, created if absent."""
    key = load_node_key(folder)
    if key is not None:
        return key
    _write_new_key(_key_dir(folder) / "node-ed25519.pem")
    key = load_node_key(folder)
    assert key is not None
    return key
