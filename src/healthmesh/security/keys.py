"""Private keys as PEM files: ed25519 keys that sign, and the file handling they share
with the X25519 keys of :mod:`healthmesh.security.sealing`.

A key file is PKCS#8 PEM, written once with mode 0600 (never overwritten: a new key
is a new identity), and encrypted with the best available algorithm when a passphrase
is given. Public keys travel as SubjectPublicKeyInfo PEM.

A private key file that other users can read still loads (refusing would only make
the node stop); :func:`key_file_warnings` lists such problems for ``healthmesh doctor``.

Keys at rest: when ``HEALTHMESH_KEY_PASSPHRASE_FILE`` names a file (kept outside the node
folder, e.g. on a separate volume or a secrets mount), every key written without an
explicit passphrase is encrypted with that file's contents, and encrypted keys load with
it; ``healthmesh keys protect DIR`` encrypts a node's existing keys. The passphrase is
never logged.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.security.errors import SecurityError

__all__ = [
    "PASSPHRASE_ENV",
    "Passphrase",
    "configured_passphrase",
    "is_encrypted",
    "generate_key",
    "key_file_warnings",
    "load_private_key",
    "load_public_key",
    "parse_public_pem",
    "public_key_pem",
    "read_key_file",
    "write_key_file",
]

Passphrase = str | bytes | None
"""A key passphrase: text (encoded as UTF-8), bytes, or None for an unencrypted key."""
PASSPHRASE_ENV = "HEALTHMESH_KEY_PASSPHRASE_FILE"


def configured_passphrase() -> bytes | None:
    """The passphrase in the file ``HEALTHMESH_KEY_PASSPHRASE_FILE`` names, or None."""
    name = os.environ.get(PASSPHRASE_ENV)
    if not name:
        return None
    try:
        secret = Path(name).read_bytes().strip(b"\r\n")
    except OSError as exc:
        raise SecurityError(f"cannot read the key passphrase file ({PASSPHRASE_ENV}): "
                            f"{exc.strerror}") from None
    if len(secret) < 12:
        raise SecurityError(f"the key passphrase file ({PASSPHRASE_ENV}) must hold at least "
                            "12 characters")
    return secret


def is_encrypted(path: Path) -> bool:
    """True if the PEM file at ``path`` holds an encrypted private key."""
    try:
        with path.open("rb") as handle:
            return b"ENCRYPTED" in handle.read(64)
    except OSError:
        return False


def generate_key(path: Path | str, passphrase: Passphrase = None) -> Ed25519PrivateKey:
    """Create a new ed25519 key and write it to ``path`` (mode 0600).

    Raises :class:`SecurityError` if ``path`` already exists.
    """
    key = Ed25519PrivateKey.generate()
    write_key_file(Path(path), key, passphrase)
    return key


def load_private_key(path: Path | str, passphrase: Passphrase = None) -> Ed25519PrivateKey:
    """The ed25519 private key in the PEM file at ``path``.

    Raises :class:`SecurityError` if the file is missing, is not an ed25519 key, or
    the passphrase is missing or wrong.
    """
    key = read_key_file(Path(path), passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise SecurityError(f"{path} does not hold an ed25519 private key")
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half of ``key`` as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse an ed25519 public key from PEM; raises :class:`SecurityError` otherwise."""
    key = parse_public_pem(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SecurityError("the public key is not an ed25519 key")
    return key


def key_file_warnings(path: Path | str) -> list[str]:
    """Problems with a private key file that do not stop it loading (for ``doctor``).

    Empty when the file exists, belongs to the current user and only they can read it.
    """
    path = Path(path)
    if not path.exists():
        return [f"{path} does not exist"]
    if os.name != "posix":
        return []
    info = path.stat()
    warnings = []
    if stat.S_IMODE(info.st_mode) & 0o077:
        warnings.append(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: other users can access "
            f"the private key; restrict it with 'chmod 600 {path}'"
        )
    if info.st_uid != os.getuid():
        warnings.append(f"{path} belongs to another user (uid {info.st_uid})")
    return warnings


def write_key_file(path: Path, key: Any, passphrase: Passphrase = None) -> None:
    """Write private ``key`` as PKCS#8 PEM to a new file ``path`` with mode 0600.

    The file appears complete or not at all; an existing file is never replaced.
    """
    if passphrase is None:
        passphrase = configured_passphrase()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SecurityError(f"{path} already exists; refusing to replace a key") from None
    finally:
        tmp.unlink()


def read_key_file(path: Path, passphrase: Passphrase = None) -> Any:
    """The private key in the PEM file ``path`` (any type); see :func:`load_private_key`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror}") from None
    password = _password(passphrase)
    if password is None and b"ENCRYPTED" in data[:64]:
        password = configured_passphrase()
    try:
        return serialization.load_pem_private_key(data, password=password)
    except TypeError:
        if password is None:
            raise SecurityError(f"{path} is encrypted; a passphrase is needed") from None
        raise SecurityError(f"{path} is not encrypted, but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        reason = "the passphrase is wrong or " if password else ""
        raise SecurityError(f"cannot load {path}: {reason}it is not a PEM private key") from None


def _password(passphrase: Passphrase) -> bytes | None:
    if passphrase is None:
        return None
    password = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    if not password:
        raise SecurityError("an empty passphrase protects nothing; give one or none")
    return password


def _encryption(passphrase: Passphrase) -> serialization.KeySerializationEncryption:
    password = _password(passphrase)
    if password is None:
        return serialization.NoEncryption()
    return serialization.BestAvailableEncryption(password)


def parse_public_pem(pem: str | bytes) -> Any:
    """The public key (any type) in SubjectPublicKeyInfo PEM ``pem``."""
    try:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SecurityError("not a PEM public key") from None
