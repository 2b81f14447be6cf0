"""``healthmesh doctor``: what in a node's set-up weakens its security.

Each finding is ``ok``, ``warn`` (the node runs, but an attacker's work is easier) or
``error`` (something will fail, e.g. an expired certificate). Nothing is changed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from healthmesh.security.keys import PASSPHRASE_ENV, is_encrypted, key_file_warnings
from healthmesh.settings import Settings

__all__ = ["Finding", "diagnose", "private_key_files"]

SOON = timedelta(days=30)
CRL_SOON = timedelta(days=2)
DATA_FILES = ("store.sqlite", "audit.sqlite", "auth.sqlite", "analytics.duckdb")


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # ok | warn | error
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "check": self.check, "message": self.message}


def diagnose(folder: Path, settings: Settings, users: list[tuple[str, str, bool]],
             now: datetime | None = None) -> list[Finding]:
    """Findings for the node folder; ``users`` are (name, role, has TOTP)."""
    now = now or datetime.now(UTC)
    found: list[Finding] = []
    found += _keys(folder)
    found += _data_files(folder)
    found += _tls(folder, settings, now)
    found += _accounts(users)
    found += _tokens(settings)
    found += _network(folder, now)
    return found


def private_key_files(folder: Path) -> list[Path]:
    """The private key files of a node folder."""
    return sorted({*folder.glob("keys/*.pem"), *folder.glob("network/*key*.pem"),
                   *folder.glob("tls/*key*.pem")})


def _keys(folder: Path) -> list[Finding]:
    paths = private_key_files(folder)
    out = [Finding("warn", "keys", w) for p in paths for w in key_file_warnings(p)]
    plain = [p for p in paths if not is_encrypted(p)]
    secret = os.environ.get(PASSPHRASE_ENV)
    if plain:
        out.append(Finding("warn", "keys", f"{len(plain)} private key(s) stored unencrypted; "
                           f"set {PASSPHRASE_ENV} to a file outside the node folder and run "
                           f"'healthmesh keys protect {folder}'"))
    if secret and Path(secret).resolve().is_relative_to(folder.resolve()):
        out.append(Finding("warn", "keys", f"the key passphrase file {secret} is inside the "
                           "node folder: whoever copies the folder has the keys too"))
    for sub in ("keys", "tls"):
        path = folder / sub
        if path.is_dir() and os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            out.append(Finding("warn", "keys", f"{path} can be listed by other users; "
                               f"'chmod 700 {path}'"))
    return out or [Finding("ok", "keys", f"{len(paths)} private key file(s), encrypted and "
                           "readable by their owner only")]


def _data_files(folder: Path) -> list[Finding]:
    if os.name == "posix" and not stat.S_IMODE(folder.stat().st_mode) & 0o007:
        return [Finding("ok", "data", f"{folder} is closed to other users of the machine")]
    out = [Finding("warn", "data", f"{folder} can be entered by every user of the machine; "
                   f"'chmod 700 {folder}'")]
    for name in DATA_FILES:
        path = folder / name
        if path.exists() and os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o007:
            out.append(Finding("warn", "data", f"{path} is readable by every user of the "
                               f"machine; 'chmod o-rwx {path}'"))
    return out


def _certificate_dates(path: Path, what: str, now: datetime) -> list[Finding]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [Finding("error", what, f"cannot read {path}: {exc}")]
    end = cert.not_valid_after_utc
    if end <= now:
        return [Finding("error", what, f"{path} expired on {end:%Y-%m-%d}")]
    if end - now < SOON:
        return [Finding("warn", what, f"{path} expires on {end:%Y-%m-%d}; renew it")]
    return [Finding("ok", what, f"{path} valid until {end:%Y-%m-%d}")]


def _tls(folder: Path, settings: Settings, now: datetime) -> list[Finding]:
    if not settings.tls_certificate or not settings.tls_private_key:
        return [Finding("warn", "tls", "TLS is off: 'healthmesh serve' speaks plain HTTP. Set "
                        "tls_certificate and tls_private_key (or 'healthmesh tls init' for a "
                        "local network), or serve only on loopback behind a TLS proxy")]
    out = _certificate_dates(folder / settings.tls_certificate, "tls", now)
    key = folder / settings.tls_private_key
    out += [Finding("warn", "tls", w) for w in key_file_warnings(key)]
    return out


def _accounts(users: list[tuple[str, str, bool]]) -> list[Finding]:
    weak = [name for name, role, totp in users if role in ("admin", "steward") and not totp]
    if weak:
        return [Finding("warn", "accounts", f"administrators and data stewards without a second "
                        f"factor: {', '.join(sorted(weak))} (recreate with --totp)")]
    return [Finding("ok", "accounts", f"{len(users)} user account(s); every administrator "
                    "and data steward has a second factor")]


def _tokens(settings: Settings) -> list[Finding]:
    out = []
    if settings.access_token_seconds > 3600:
        out.append(Finding("warn", "tokens", f"access tokens live "
                           f"{settings.access_token_seconds} s; a stolen token stays useful "
                           "that long (SMART recommends minutes)"))
    if settings.rate_limit_per_minute > 100_000:
        out.append(Finding("warn", "tokens", "rate_limit_per_minute is so high that it does "
                           "not slow password or token guessing"))
    return out or [Finding("ok", "tokens", f"access tokens live "
                           f"{settings.access_token_seconds} s; rate limit "
                           f"{settings.rate_limit_per_minute}/min")]


def _network(folder: Path, now: datetime) -> list[Finding]:
    net = folder / "network"
    if not net.is_dir():
        return []
    out: list[Finding] = []
    cert = net / "member-cert.pem"
    if cert.exists():
        out += _certificate_dates(cert, "membership", now)
    crl_path = net / "crl.pem"
    if crl_path.exists():
        try:
            crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        except ValueError as exc:
            return [*out, Finding("error", "membership", f"cannot read {crl_path}: {exc}")]
        due = crl.next_update_utc
        if due is not None and due <= now:
            out.append(Finding("error", "membership", f"the revocation list expired on "
                               f"{due:%Y-%m-%d}: members will be refused until the authority "
                               "re-signs it ('healthmesh network crl')"))
        elif due is not None and due - now < CRL_SOON:
            out.append(Finding("warn", "membership", f"the revocation list expires on "
                               f"{due:%Y-%m-%d %H:%M} UTC; the authority must re-sign it"))
    return out
