"""The secret the linking nodes share: a file of at least 32 random bytes, mode 0600.

Everyone holding the secret can rebuild CLKs from guessed names and dates, so the file is
refused when other users may read it (unlike node key files, which load with a warning
from :func:`~healthmesh.security.keys.key_file_warnings`: a CLK secret is shared across
organisations and a leak undoes the linkage's protection for all of them). The linkage
unit never needs it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from healthmesh.linkage.errors import SecretError

__all__ = ["MIN_SECRET_BYTES", "create_secret", "read_secret"]

MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096


def read_secret(path: Path) -> bytes:
    """The secret in ``path``; raises :class:`SecretError` if it is missing, too short or
    too long, or readable by other users."""
    try:
        info = path.stat()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    if os.name == "posix" and stat.S_IMODE(info.st_mode) & 0o077:
        raise SecretError(f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}: other "
                          f"users can read it; restrict it with 'chmod 600 {path}'")
    if info.st_size > MAX_SECRET_BYTES:
        raise SecretError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    data = path.read_bytes()
    if len(data) < MIN_SECRET_BYTES:
        raise SecretError(f"secret file {path} holds {len(data)} bytes; at least "
                          f"{MIN_SECRET_BYTES} random bytes are needed")
    return data


def create_secret(path: Path, size: int = MIN_SECRET_BYTES) -> None:
    """Write ``size`` random bytes to a new file ``path`` with mode 0600 (never replaces)."""
    if size < MIN_SECRET_BYTES or size > MAX_SECRET_BYTES:
        raise SecretError(f"a secret has {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SecretError(f"{path} already exists; a new secret needs a new file") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(size))
