"""End-to-end sealing of payloads to a recipient's X25519 key, so relays cannot read them.

Patient-level data that travels through the hub is sealed by the sending node to the
receiving node's box key (as in India's ABDM health information exchange): the hub
relays bytes it cannot open. Each envelope uses a fresh ephemeral X25519 key::

    shared = X25519(ephemeral private, recipient public)
    key    = HKDF-SHA256(shared, salt = ephemeral public || recipient public,
                         info = b"healthmesh-seal-v1", length 32)
    AES-256-GCM(key, nonce, plaintext, associated data = header || aad)

Envelope (binary, 65 bytes + plaintext length)::

    offset  size  field
    0       4     magic b"HMSL"
    4       1     version, 1
    5       32    ephemeral X25519 public key (raw)
    37      12    random GCM nonce
    49      n+16  ciphertext with the 16-byte GCM tag

The header (the first 49 bytes) is authenticated as associated data together with the
caller's ``aad``, so changing any byte - version included - makes opening fail. The
sender is not authenticated by sealing; sign the envelope (or the request carrying it)
with :mod:`healthmesh.security.signing`. The whole plaintext is held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthmesh.security.errors import DecryptionFailed, SecurityError
from healthmesh.security.keys import Passphrase, parse_public_pem, read_key_file, write_key_file

__all__ = [
    "SEAL_VERSION",
    "box_public_pem",
    "generate_box_key",
    "load_box_key",
    "load_box_public_key",
    "open_sealed",
    "seal",
]

MAGIC = b"HMSL"
SEAL_VERSION = 1
HKDF_INFO = b"healthmesh-seal-v1"
_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = len(MAGIC) + 1 + _KEY_SIZE + _NONCE_SIZE


def generate_box_key(path: Path | str, passphrase: Passphrase = None) -> X25519PrivateKey:
    """Create a new X25519 box key and write it to ``path`` (PKCS#8 PEM, mode 0600)."""
    key = X25519PrivateKey.generate()
    write_key_file(Path(path), key, passphrase)
    return key


def load_box_key(path: Path | str, passphrase: Passphrase = None) -> X25519PrivateKey:
    """The X25519 private box key in the PEM file at ``path``."""
    key = read_key_file(Path(path), passphrase)
    if not isinstance(key, X25519PrivateKey):
        raise SecurityError(f"{path} does not hold an X25519 private key")
    return key


def box_public_pem(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The public half of a box key as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_box_public_key(pem: str | bytes) -> X25519PublicKey:
    """Parse an X25519 public key from PEM; raises :class:`SecurityError` otherwise."""
    key = parse_public_pem(pem)
    if not isinstance(key, X25519PublicKey):
        raise SecurityError("the public key is not an X25519 box key")
    return key


def seal(recipient_public: X25519PublicKey, plaintext: bytes, *, aad: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so only the holder of the recipient's private key can read it.

    ``aad`` (e.g. a task id) is authenticated, not encrypted; the same value must be
    given to :func:`open_sealed`.
    """
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    key = _derive(ephemeral.exchange(recipient_public), ephemeral_raw, _raw(recipient_public))
    nonce = os.urandom(_NONCE_SIZE)
    header = MAGIC + bytes([SEAL_VERSION]) + ephemeral_raw + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def open_sealed(private_key: X25519PrivateKey, envelope: bytes, *, aad: bytes = b"") -> bytes:
    """Decrypt an envelope made by :func:`seal`.

    Raises :class:`DecryptionFailed` if the envelope is truncated, malformed, of an
    unknown version, tampered with, sealed to another key, or ``aad`` differs.
    """
    header = _check_header(envelope)
    ephemeral_raw = header[5 : 5 + _KEY_SIZE]
    nonce = header[5 + _KEY_SIZE :]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
    except ValueError:
        raise DecryptionFailed("the sealed envelope has an invalid ephemeral key") from None
    key = _derive(shared, ephemeral_raw, _raw(private_key.public_key()))
    try:
        return AESGCM(key).decrypt(nonce, envelope[_HEADER_SIZE:], header + aad)
    except InvalidTag:
        raise DecryptionFailed(
            "the sealed envelope does not open: it was tampered with, sealed to another "
            "key, or the associated data differs"
        ) from None


def _check_header(envelope: bytes) -> bytes:
    if len(envelope) < _HEADER_SIZE + _TAG_SIZE:
        raise DecryptionFailed(f"the sealed envelope is truncated ({len(envelope)} bytes)")
    if envelope[:4] != MAGIC:
        raise DecryptionFailed("not a healthmesh sealed envelope")
    if envelope[4] != SEAL_VERSION:
        raise DecryptionFailed(f"unsupported sealed envelope version {envelope[4]}")
    return bytes(envelope[:_HEADER_SIZE])


def _derive(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_SIZE,
        salt=ephemeral_raw + recipient_raw,
        info=HKDF_INFO,
    )
    return hkdf.derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
