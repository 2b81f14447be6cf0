"""Errors of network security, part of the healthmesh exception tree::

    HealthmeshError
     └── SecurityError               a key, certificate or message cannot be trusted or used
          ├── InvalidCertificate     not a membership of this network (forged, expired, ...)
          ├── RevokedCertificate     the authority has revoked the membership
          ├── InvalidSignature       a signed message fails verification
          ├── ReplayedMessage        a validly signed message seen before, or too old/new
          └── DecryptionFailed       a sealed envelope cannot be opened

:class:`SecurityError` itself is raised for key files that cannot be written or read
(wrong passphrase, not an ed25519 key, file already exists). Errors of ``cryptography``
and ``PyJWT`` are translated into these where this package calls them; messages say
what was wrong but never include key material.
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = [
    "DecryptionFailed",
    "InvalidCertificate",
    "InvalidSignature",
    "ReplayedMessage",
    "RevokedCertificate",
    "SecurityError",
]


class SecurityError(HealthmeshError):
    """A key, certificate or message cannot be trusted or used; the message says why."""


class InvalidCertificate(SecurityError):
    """A certificate (or its request or revocation list) is not valid for this network."""


class RevokedCertificate(SecurityError):
    """The network authority has revoked this membership certificate."""


class InvalidSignature(SecurityError):
    """A signed request or payload does not verify (or names an unknown sender)."""


class ReplayedMessage(SecurityError):
    """A validly signed message was seen before, or its timestamp is outside the window."""


class DecryptionFailed(SecurityError):
    """A sealed envelope is malformed, tampered with, or sealed to another key."""
