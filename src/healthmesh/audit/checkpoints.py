"""Signed checkpoints: the node's ed25519 signature over the chain head at a position.

A checkpoint commits to every entry up to its position (the entry hash there covers
the whole chain before it). Checkpoints are numbered 1, 2, ... and each names the
position of the one before it, so removing one from the middle breaks the numbering.
The signed payload is the canonical JSON (sorted keys, no whitespace) of::

    {"format": "healthmesh-audit-checkpoint/1", "log": <log id>, "number": n,
     "position": p, "hash": <hex entry hash at p>, "prev_position": <position of n-1>,
     "every": <checkpoint interval in force>, "time": <epoch us>, "key": <key id>}

:func:`check_checkpoints` returns every problem it finds as a :class:`Failure` at the
position it concerns; the log merges them with the chain walk and reports the first.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.audit.errors import AuditError
from healthmesh.audit.keys import public_key_id

__all__ = ["FORMAT", "Checkpoint", "Failure", "check_checkpoints", "sign_checkpoint"]

FORMAT = "healthmesh-audit-checkpoint/1"


class Failure(NamedTuple):
    """One verification failure: the first position it concerns and why."""

    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "entry ``position`` of log ``log_id`` has hash ``hash``"."""

    log_id: str
    number: int
    position: int
    hash: bytes
    prev_position: int
    every: int
    time: int
    key_id: str
    signature: bytes

    def payload(self) -> bytes:
        """The canonical bytes the signature is over."""
        return orjson.dumps(
            {
                "format": FORMAT, "log": self.log_id, "number": self.number,
                "position": self.position, "hash": self.hash.hex(),
                "prev_position": self.prev_position, "every": self.every,
                "time": self.time, "key": self.key_id,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    def signature_ok(self, public_key: Ed25519PublicKey) -> bool:
        """Whether the signature is valid under ``public_key`` (and names that key)."""
        if self.key_id != public_key_id(public_key):
            return False
        try:
            public_key.verify(self.signature, self.payload())
        except InvalidSignature:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form to hand to an external party (hash hex, signature base64)."""
        out = orjson.loads(self.payload())
        out["signature"] = base64.b64encode(self.signature).decode("ascii")
        return dict(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Rebuild a checkpoint from :meth:`to_dict` output."""
        try:
            return cls(
                data["log"], int(data["number"]), int(data["position"]),
                bytes.fromhex(data["hash"]), int(data["prev_position"]), int(data["every"]),
                int(data["time"]), str(data["key"]), base64.b64decode(data["signature"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AuditError(f"not a healthmesh audit checkpoint: {exc!r}") from None


def sign_checkpoint(
    key: Ed25519PrivateKey, log_id: str, number: int, position: int, hash_: bytes,
    prev_position: int, every: int, time: int,
) -> Checkpoint:
    """Build and sign checkpoint ``number`` over the entry hash at ``position``."""
    unsigned = Checkpoint(
        log_id, number, position, hash_, prev_position, every, time,
        public_key_id(key.public_key()), b"",
    )
    return replace(unsigned, signature=key.sign(unsigned.payload()))


def _signature_failure(
    cp: Checkpoint, public_key: Ed25519PublicKey, log_id: str
) -> Failure | None:
    where = f"checkpoint #{cp.number} at position {cp.position}"
    if cp.log_id != log_id:
        return Failure(cp.position, f"{where} belongs to another log ({cp.log_id})")
    if cp.signature_ok(public_key):
        return None
    key = public_key_id(public_key)
    reason = f"{where}: signature is not valid under the node key {key}"
    if cp.key_id != key:
        reason += f" (it names key {cp.key_id})"
    return Failure(cp.position, reason)


def _sequence_failure(cp: Checkpoint, prev: Checkpoint | None) -> Failure | None:
    expected = prev.number + 1 if prev else 1
    prev_position = prev.position if prev else 0
    if cp.number > expected:
        missing = cp.number - expected
        position = cp.prev_position if missing == 1 else prev_position + 1
        return Failure(position, f"checkpoint #{expected} was removed "
                                 f"({missing} missing before checkpoint #{cp.number})")
    if cp.number != expected or cp.prev_position != prev_position or cp.position < prev_position:
        return Failure(min(cp.position, prev_position + 1),
                       f"checkpoint #{cp.number} does not follow checkpoint #{expected - 1}")
    return None


def check_checkpoints(
    checkpoints: Sequence[Checkpoint], public_key: Ed25519PublicKey, log_id: str,
    *, sequence: bool = True,
) -> tuple[list[Checkpoint], list[Failure]]:
    """Split checkpoints (ordered by number) into genuine ones and failures.

    Genuine means signed by ``public_key`` for this log; a genuine checkpoint after a
    removed one is still genuine (the removal is reported as its own failure). With
    ``sequence=False`` only signatures are checked (for a subset of the checkpoints).
    """
    genuine: list[Checkpoint] = []
    failures: list[Failure] = []
    for cp in checkpoints:
        failure = _signature_failure(cp, public_key, log_id)
        if failure is not None:
            failures.append(failure)
            continue
        failure = _sequence_failure(cp, genuine[-1] if genuine else None) if sequence else None
        if failure is not None:
            failures.append(failure)
        genuine.append(cp)
    return genuine, failures
