"""Cryptographic primitives of network membership.

* :mod:`~healthmesh.security.keys` - ed25519 key files (PKCS#8 PEM, 0600, passphrase).
* :mod:`~healthmesh.security.authority` - the network authority: an X.509 CA that
  issues membership certificates (organisation id, name, roles) and revocation lists;
  :func:`verify_membership` checks a certificate against both.
* :mod:`~healthmesh.security.signing` - signed node-to-node requests (one JWS header,
  replay-protected by nonce and timestamp) and signed detached payloads.
* :mod:`~healthmesh.security.sealing` - end-to-end encryption of payloads to a
  recipient's X25519 key (ephemeral ECDH, HKDF-SHA256, AES-256-GCM).

Errors, part of the healthmesh exception tree::

    HealthmeshError
     └── SecurityError               a key, certificate or message cannot be trusted or used
          ├── InvalidCertificate     not a membership of this network (forged, expired, ...)
          ├── RevokedCertificate     the authority has revoked the membership
          ├── InvalidSignature       a signed message fails verification
          ├── ReplayedMessage        a validly signed message seen before, or too old/new
          └── DecryptionFailed       a sealed envelope cannot be opened
"""

from healthmesh.security.authority import (
    ROLES,
    Membership,
    MembershipRequest,
    NetworkAuthority,
    make_csr,
    read_csr,
    verify_membership,
)
from healthmesh.security.errors import (
    DecryptionFailed,
    InvalidCertificate,
    InvalidSignature,
    ReplayedMessage,
    RevokedCertificate,
    SecurityError,
)
from healthmesh.security.keys import (
    generate_key,
    key_file_warnings,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from healthmesh.security.sealing import (
    box_public_pem,
    generate_box_key,
    load_box_key,
    load_box_public_key,
    open_sealed,
    seal,
)
from healthmesh.security.signing import (
    SIGNATURE_HEADER,
    MemoryNonceStore,
    NonceStore,
    RequestVerifier,
    SQLiteNonceStore,
    VerifiedRequest,
    sign_payload,
    sign_request,
    unverified_sender,
    verify_payload,
)

__all__ = [
    "ROLES",
    "SIGNATURE_HEADER",
    "DecryptionFailed",
    "InvalidCertificate",
    "InvalidSignature",
    "Membership",
    "MembershipRequest",
    "MemoryNonceStore",
    "NetworkAuthority",
    "NonceStore",
    "ReplayedMessage",
    "RequestVerifier",
    "RevokedCertificate",
    "SQLiteNonceStore",
    "SecurityError",
    "VerifiedRequest",
    "box_public_pem",
    "generate_box_key",
    "generate_key",
    "key_file_warnings",
    "load_box_key",
    "load_box_public_key",
    "load_private_key",
    "load_public_key",
    "make_csr",
    "open_sealed",
    "public_key_pem",
    "read_csr",
    "seal",
    "sign_payload",
    "sign_request",
    "unverified_sender",
    "verify_membership",
    "verify_payload",
]
