"""Node settings: one typed object, defaults < ``node.toml`` < environment < flags.

Every setting has a default and a description (``healthmesh node settings``
lists them, and a test checks each is documented in docs/reference/settings.md).
Settings are validated when loaded; a bad value is a :class:`ConfigError`
naming the setting and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from healthmesh.errors import ConfigError

__all__ = ["SETTINGS_HELP", "Settings", "load_settings"]

ENV_PREFIX = "HEALTHMESH_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings of one node."""

    name: str = "healthmesh node"
    max_body_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 64
    default_page_size: int = 50
    strict_search: bool = False
    organization: str = ""
    denied_status: int = 404
    consent_policy: str = ""
    ingest_batch_size: int = 2000
    ingest_workers: int = max(1, min(4, os.cpu_count() or 1))
    hl7v2_timezone: str = "UTC"
    mllp_max_message_bytes: int = 1024 * 1024
    mllp_idle_timeout_seconds: int = 300
    hub_url: str = ""
    agent_poll_seconds: int = 20
    release_review: str = "auto"
    access_token_seconds: int = 300
    tls_certificate: str = ""
    tls_private_key: str = ""
    hub_tls_ca: str = ""
    rate_limit_per_minute: int = 1200
    deidentify_exports_for: str = "HRESCH"
    export_deid_profile: str = "pseudonymize"


SETTINGS_HELP: dict[str, str] = {
    "deidentify_exports_for": "Purposes of use (comma-separated ActReason codes) whose bulk "
    "exports are always de-identified; '' for none.",
    "export_deid_profile": "De-identification profile of those exports when the request names "
    "none: safe-harbor, date-shift or pseudonymize (keyed per recipient organisation).",
    "name": "Human-readable name of the node, shown in the CapabilityStatement.",
    "max_body_bytes": "Largest request body accepted (bytes); larger bodies get 413.",
    "max_json_depth": "Deepest JSON nesting accepted in a resource; deeper input is rejected.",
    "default_page_size": "Search page size when the request has no _count.",
    "strict_search": "Reject unknown search parameters with 400 even without "
    "'Prefer: handling=strict'.",
    "organization": "Reference of the organisation running the node (Organization/<id>); "
    "operations purposes (HOPERAT) are allowed for it alone.",
    "denied_status": "HTTP status of a read the consent gate refuses: 404 (does not reveal "
    "that the resource exists) or 403.",
    "consent_policy": "Path of a TOML file overriding the network's default consent policy "
    "per purpose of use (relative to the node folder).",
    "ingest_batch_size": "Resources written per atomic batch by 'healthmesh ingest'.",
    "ingest_workers": "Worker processes that parse, validate and index during ingest "
    "(0: do it all in the main process).",
    "hl7v2_timezone": "Time zone (IANA name, or UTC) of HL7 v2 times sent without an offset.",
    "mllp_max_message_bytes": "Largest HL7 v2 message accepted over MLLP or in a .hl7 file "
    "(bytes); larger ones are rejected (AR) and dead-lettered.",
    "mllp_idle_timeout_seconds": "An MLLP connection that sends nothing for this long is "
    "closed.",
    "hub_url": "URL of the network hub the node agent connects out to (empty: the node is "
    "not in a network). Needs the membership files in DIR/network/ (healthmesh node join).",
    "agent_poll_seconds": "How long one long-poll of the node agent waits at the hub for "
    "tasks before asking again.",
    "access_token_seconds": "Lifetime of the access tokens the node issues (seconds); "
    "clients refresh or ask again. At most 86400.",
    "tls_certificate": "PEM certificate (chain) 'healthmesh serve' presents for HTTPS, "
    "relative to the node folder (empty: plain HTTP).",
    "tls_private_key": "PEM private key of tls_certificate, relative to the node folder.",
    "hub_tls_ca": "PEM certificate(s) the node agent trusts for the hub's TLS certificate, "
    "relative to the node folder (empty: the system's trust store).",
    "rate_limit_per_minute": "Requests per minute one client (access token subject) or one "
    "IP address may make before getting 429 Too Many Requests.",
    "release_review": "'auto': federated results that pass disclosure control leave at once; "
    "'manual': they wait for a data steward (healthmesh release approve).",
}


def _coerce(name: str, value: Any, source: str) -> Any:
    field_type = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if field_type == "int":
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if number < 0 or (number == 0 and name != "ingest_workers"):
                raise ValueError
            return number
        if field_type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        return str(value)
    except ValueError:
        raise ConfigError(f"setting '{name}' from {source}: invalid value {value!r} "
                          f"(expected {field_type})") from None


def load_settings(folder: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from defaults, then ``folder/node.toml``, then environment, then overrides."""
    settings = Settings()
    known = {f.name for f in fields(Settings)}
    layers: list[tuple[str, dict[str, Any]]] = []
    if folder is not None and (folder / "node.toml").exists():
        path = folder / "node.toml"
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        layers.append((str(path), data.get("node", data)))
    env = {k[len(ENV_PREFIX):].lower(): v for k, v in os.environ.items()
           if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() in known}
    layers.append(("environment", env))
    layers.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            if key not in known:
                raise ConfigError(f"unknown setting '{key}' in {source}")
            settings = replace(settings, **{key: _coerce(key, value, source)})
    if settings.release_review not in ("auto", "manual"):
        raise ConfigError(
            f"setting 'release_review' must be 'auto' or 'manual', not {settings.release_review!r}"
        )
    if settings.denied_status not in (403, 404):
        raise ConfigError(
            f"setting 'denied_status' must be 403 or 404, not {settings.denied_status}"
        )
    if settings.export_deid_profile not in ("safe-harbor", "date-shift", "pseudonymize"):
        raise ConfigError("setting 'export_deid_profile' must be safe-harbor, date-shift or "
                          f"pseudonymize, not {settings.export_deid_profile!r}")
    for code in deidentified_purposes(settings):
        if not code.isalpha() or not code.isupper():
            raise ConfigError("setting 'deidentify_exports_for' lists ActReason codes "
                              f"separated by commas (like HRESCH,PUBHLTH), not {code!r}")
    return settings


def deidentified_purposes(settings: Settings) -> frozenset[str]:
    """The purposes of use whose bulk exports are always de-identified."""
    return frozenset(p.strip() for p in settings.deidentify_exports_for.split(",") if p.strip())
