"""Enrolling members of a real (multi-machine) network: the authority, the hub, nodes,
analysts, and the agreements they sign.

``healthmesh network up`` plays every party on one machine; here each party does its
own step with its own key, and only public material (signing requests, certificates,
revocation lists, signed agreements) travels between them:

1. the authority's administrator creates the network authority (:func:`init_authority`);
2. the hub's operator creates the hub folder with a hub certificate (:func:`init_hub`);
3. a hospital's administrator asks to join (:func:`join_request` writes a signing request
   made with the node's own key), the authority issues a certificate (:func:`issue`), and
   the node installs it with the authority's certificate and revocation list
   (:func:`join_install`); an analyst does the same with a credentials folder
   (:func:`analyst_credentials`, :func:`analyst_install`);
4. the hub registers the members' certificates (:func:`register`);
5. each party signs each agreement with its own key (:func:`sign_agreement_file`), and
   each node installs its copy once every party has signed (:func:`install_agreement`).

Layouts (the same as ``network up`` makes)::

    AUTHORITY/authority-key.pem authority-cert.pem revocations.json crl.pem
    HUB/keys/ hub-cert.pem ca-cert.pem crl.pem hub.sqlite
    NODE/network/member.csr member-cert.pem ca-cert.pem crl.pem agreements/<id>.json
    NODE/node.toml          [node] organization = "Organization/<id>", hub_url = "..."
    ANALYST/key.pem member.csr member-cert.pem ca-cert.pem crl.pem credentials.json

Every error is a :class:`MembershipError` (a :class:`ConfigError`) naming the file and
the problem; :class:`BadValue` (and its :class:`UnknownRole`) for a role or revocation
reason the network does not know, :class:`AgreementFileError` for an unreadable agreement.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthmesh.audit import load_node_key, load_or_create_node_key
from healthmesh.audit.keys import KEY_FILE as NODE_KEY
from healthmesh.errors import ConfigError, HealthmeshError
from healthmesh.network.agreements import Agreement, AgreementError, load_agreement
from healthmesh.network.hub_state import HubState
from healthmesh.network.members import (
    Identity,
    MemberDirectory,
    sign_agreement,
    verify_agreement_signatures,
    write_credentials,
)
from healthmesh.security import (
    ROLES,
    Membership,
    NetworkAuthority,
    generate_key,
    load_private_key,
    make_csr,
    read_csr,
    verify_membership,
)

__all__ = [
    "HUB_ORG",
    "AgreementFileError",
    "BadValue",
    "MembershipError",
    "UnknownRole",
    "analyst_credentials",
    "analyst_install",
    "check_roles",
    "init_authority",
    "init_hub",
    "install_agreement",
    "is_revoked",
    "issue",
    "join_install",
    "join_request",
    "load_agreement_file",
    "load_node_identity",
    "member_directory",
    "refresh_crl",
    "register",
    "revoke",
    "set_node_settings",
    "sign_agreement_file",
]

HUB_ORG = "hub"
NETWORK_DIR = "network"
NODE_FILE = "node.toml"
AUTHORITY_CERT = "authority-cert.pem"
CRL_FILE = "crl.pem"
CSR_FILE = "member.csr"
MEMBER_CERT = "member-cert.pem"
CA_FILE = "ca-cert.pem"
HUB_CERT = "hub-cert.pem"
ANALYST_KEY = "key.pem"
CREDENTIALS = "credentials.json"
# agreements name parties Organization/<id> with a narrower alphabet than certificates
_AGREEMENT_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")


class MembershipError(ConfigError):
    """A folder, request, certificate or agreement that cannot be used; the message says
    which file and why."""


class BadValue(MembershipError):
    """A value that is not allowed (an unknown role or revocation reason): a usage error."""


class UnknownRole(BadValue):
    """A role that is not one of the network's roles (healthmesh.security.ROLES)."""


class AgreementFileError(MembershipError):
    """An agreement file that cannot be read or is not a valid agreement."""


# -- the authority ---------------------------------------------------------------------

def check_roles(roles: Iterable[str]) -> list[str]:
    """The roles, sorted and unique; raises :class:`UnknownRole` for any unknown one."""
    wanted = sorted({r.strip() for r in roles if r.strip()})
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise UnknownRole(f"unknown role(s): {', '.join(unknown)} "
                          f"(roles are: {', '.join(sorted(ROLES))})")
    if not wanted:
        raise UnknownRole(f"give at least one role (roles are: {', '.join(sorted(ROLES))})")
    return wanted


def init_authority(folder: Path, name: str) -> NetworkAuthority:
    """Create the network authority in ``folder`` (key, CA certificate, empty CRL)."""
    folder = Path(folder)
    try:
        authority = NetworkAuthority.create(folder, name)
    except HealthmeshError as exc:
        raise MembershipError(str(exc)) from None
    _write(folder / CRL_FILE, authority.crl_pem())
    return authority


def _authority(folder: Path) -> NetworkAuthority:
    folder = Path(folder)
    if not (folder / AUTHORITY_CERT).exists():
        raise MembershipError(f"{folder} is not a network authority folder (no {AUTHORITY_CERT}; "
                              f"create one with 'healthmesh network init {folder} --name ...')")
    try:
        return NetworkAuthority.open(folder)
    except HealthmeshError as exc:
        raise MembershipError(f"{folder}: {exc}") from None


def issue(authority_folder: Path, csr_pem: bytes, roles: Iterable[str], days: int = 365) -> bytes:
    """A membership certificate (PEM) for the signing request, granting ``roles``."""
    granted = check_roles(roles)
    authority = _authority(authority_folder)
    try:
        if read_csr(csr_pem).org_id == HUB_ORG:  # the hub's own id: 'hub init' issues it
            raise MembershipError(f"organisation id {HUB_ORG!r} is reserved for the hub")
        return authority.sign_membership(csr_pem, granted, days)
    except HealthmeshError as exc:
        raise MembershipError(f"cannot issue a certificate: {exc}") from None


def revoke(authority_folder: Path, cert_pem: bytes, reason: str = "unspecified") -> int:
    """Revoke a certificate this authority issued; rewrite ``AUTHORITY/crl.pem``; return the
    serial. The new list must reach the hub (``HUB/crl.pem``); nodes fetch it from there."""
    reasons = [f for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl]
    if reason not in {f.value for f in reasons} | {f.name for f in reasons}:
        raise BadValue(f"unknown revocation reason {reason!r}; use one of: "
                       f"{', '.join(f.value for f in reasons)}")
    authority = _authority(authority_folder)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise MembershipError("not a PEM X.509 certificate") from None
    ca_key = authority.certificate.public_key()
    assert isinstance(ca_key, Ed25519PublicKey)
    try:
        if cert.issuer != authority.certificate.subject:
            raise ValueError
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes)
    except (ValueError, InvalidSignature):
        raise MembershipError(f"the certificate was not issued by the authority in "
                              f"{authority_folder}") from None
    try:
        authority.revoke(cert.serial_number, reason)
    except HealthmeshError as exc:
        raise MembershipError(str(exc)) from None
    _write(Path(authority_folder) / CRL_FILE, authority.crl_pem())
    return int(cert.serial_number)


def is_revoked(authority_folder: Path, cert_pem: bytes) -> bool:
    """Whether the authority has already revoked this certificate."""
    try:
        serial = x509.load_pem_x509_certificate(cert_pem).serial_number
    except ValueError:
        raise MembershipError("not a PEM X.509 certificate") from None
    return serial in _authority(authority_folder).revoked_serials()


def refresh_crl(authority_folder: Path) -> bytes:
    """Sign a fresh revocation list (each is valid for 7 days) into ``AUTHORITY/crl.pem``."""
    authority = _authority(authority_folder)
    crl = authority.crl_pem()
    _write(Path(authority_folder) / CRL_FILE, crl)
    return crl


# -- the hub ---------------------------------------------------------------------------

def init_hub(hub_folder: Path, authority_folder: Path, name: str = "Network hub") -> Membership:
    """Create a hub folder: its key, a hub certificate from the authority, the authority's
    certificate and revocation list, and an empty ``hub.sqlite`` (the hub registered)."""
    hub_folder = Path(hub_folder)
    authority = _authority(authority_folder)
    if (hub_folder / HUB_CERT).exists():
        raise MembershipError(f"{hub_folder} already holds a hub ({HUB_CERT})")
    if hub_folder.is_dir() and (hub_folder / NODE_FILE).exists():
        raise MembershipError(f"{hub_folder} is a node folder, not a place for a hub")
    hub_folder.mkdir(parents=True, exist_ok=True)
    key = load_or_create_node_key(hub_folder)
    cert = authority.sign_membership(make_csr(key, HUB_ORG, name, ["hub"]), ["hub"])
    crl = authority.crl_pem()
    _write(hub_folder / CA_FILE, authority.cert_pem)
    _write(hub_folder / CRL_FILE, crl)
    _write(hub_folder / HUB_CERT, cert)
    membership = verify_membership(cert, authority.cert_pem, crl)
    HubState(hub_folder / "hub.sqlite").put_member(
        f"Organization/{membership.org_id}", membership.org_name, list(membership.roles),
        cert.decode())
    return membership


def register(hub_folder: Path, cert_pems: Iterable[bytes],
             names: list[str] | None = None) -> list[str]:
    """Register (or renew) members at the hub from their certificates, each verified
    against the hub's ``ca-cert.pem`` and ``crl.pem``; return their organisations.

    Either every certificate is registered, or none (the first bad one is named, by its
    entry in ``names`` when given)."""
    hub_folder = Path(hub_folder)
    ca_path, crl_path = hub_folder / CA_FILE, hub_folder / CRL_FILE
    if not ca_path.exists() or not (hub_folder / "hub.sqlite").exists():
        raise MembershipError(f"{hub_folder} is not a hub folder (no {CA_FILE} or hub.sqlite; "
                              f"create one with 'healthmesh hub init')")
    ca = ca_path.read_bytes()
    crl = crl_path.read_bytes() if crl_path.exists() else None
    memberships = []
    for number, pem in enumerate(cert_pems, 1):
        memberships.append(_verified(pem, ca, crl, _label(names, number)))
    state = HubState(hub_folder / "hub.sqlite")
    for membership in memberships:
        state.put_member(f"Organization/{membership.org_id}", membership.org_name,
                         list(membership.roles), membership.cert_pem.decode())
    return [f"Organization/{m.org_id}" for m in memberships]


# -- nodes -----------------------------------------------------------------------------

def join_request(node_folder: Path, org_id: str, name: str, roles: Iterable[str],
                 hub_url: str) -> bytes:
    """Ask to join: write ``DIR/network/member.csr`` (signed with the node's own key) and
    set ``organization`` and ``hub_url`` in ``node.toml``; return the request (PEM)."""
    node_folder = Path(node_folder)
    _node_config(node_folder)
    _check_org_id(org_id)
    hub_url = _check_url(hub_url)
    key = load_or_create_node_key(node_folder)
    csr = _csr(key, org_id, name, roles)
    set_node_settings(node_folder, {"organization": f"Organization/{org_id}",
                                    "hub_url": hub_url})
    _write(node_folder / NETWORK_DIR / CSR_FILE, csr)
    return csr


def join_install(node_folder: Path, cert_pem: bytes, ca_pem: bytes,
                 crl_pem: bytes | None = None) -> Membership:
    """Install the node's membership certificate, the authority's certificate and (when
    given) its revocation list in ``DIR/network/``, once the certificate is verified: issued
    by that authority, not revoked, for this node's own key and its organization setting."""
    node_folder = Path(node_folder)
    settings = _node_config(node_folder)
    membership = _verified(cert_pem, ca_pem, crl_pem, "the certificate")
    _same_key(membership, _node_key(node_folder), f"the node key of {node_folder}")
    org = f"Organization/{membership.org_id}"
    wanted = str(settings.get("organization", ""))
    if not wanted:
        raise MembershipError(f"{node_folder / NODE_FILE} has no organization setting: ask to "
                              "join first ('healthmesh node join DIR --org ID ...')")
    if wanted != org:
        raise MembershipError(f"the certificate is for {org}, but {node_folder / NODE_FILE} "
                              f"says organization = {wanted!r}")
    folder = node_folder / NETWORK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / CA_FILE, ca_pem)
    if crl_pem is not None:
        _write(folder / CRL_FILE, crl_pem)
    _write(folder / MEMBER_CERT, membership.cert_pem)
    return membership


def load_node_identity(node_folder: Path) -> Identity:
    """A node's network identity (key, certificate, trust anchor, hub) without opening its
    store; the certificate is checked against the node's key and organization setting."""
    node_folder = Path(node_folder)
    settings = _node_config(node_folder)
    folder = node_folder / NETWORK_DIR
    cert_path, ca_path, crl_path = folder / MEMBER_CERT, folder / CA_FILE, folder / CRL_FILE
    if not cert_path.exists() or not ca_path.exists():
        raise MembershipError(f"{node_folder} has no network membership ({cert_path} and "
                              f"{ca_path}; 'healthmesh node join' installs them)")
    crl = crl_path.read_bytes() if crl_path.exists() else None
    membership = _verified(cert_path.read_bytes(), ca_path.read_bytes(), crl, str(cert_path))
    key = _node_key(node_folder)
    _same_key(membership, key, f"the node key of {node_folder}")
    org = f"Organization/{membership.org_id}"
    if settings.get("organization") and settings["organization"] != org:
        raise MembershipError(f"{cert_path} is for {org}, but {node_folder / NODE_FILE} says "
                              f"organization = {settings['organization']!r}")
    return Identity(org, key, cert_path.read_text(), ca_path.read_bytes(),
                    str(settings.get("hub_url", "")).rstrip("/"))


# -- analysts (members without a node) -------------------------------------------------

def analyst_credentials(folder: Path, org_id: str, name: str, roles: Iterable[str],
                        hub_url: str) -> bytes:
    """Ask to join as a member without a node (an analyst): create ``key.pem`` (once),
    write ``member.csr`` and ``credentials.json``; return the request (PEM). The
    credentials work once :func:`analyst_install` has added the certificate."""
    folder = Path(folder)
    _check_org_id(org_id)
    hub_url = _check_url(hub_url)
    if (folder / NODE_FILE).exists():
        raise MembershipError(f"{folder} is a node folder; use 'healthmesh node join'")
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / ANALYST_KEY
    try:
        key = load_private_key(key_path) if key_path.exists() else generate_key(key_path)
    except HealthmeshError as exc:
        raise MembershipError(f"{key_path}: {exc}") from None
    csr = _csr(key, org_id, name, roles)
    _write(folder / CSR_FILE, csr)
    write_credentials(folder / CREDENTIALS, org=f"Organization/{org_id}", hub=hub_url,
                      key=ANALYST_KEY, cert=MEMBER_CERT, ca=CA_FILE)
    return csr


def analyst_install(folder: Path, cert_pem: bytes, ca_pem: bytes,
                    crl_pem: bytes | None = None) -> Membership:
    """Install an analyst's certificate next to its key (checked as :func:`join_install`
    checks a node's: this authority, not revoked, this key, the organisation asked for)."""
    folder = Path(folder)
    credentials = folder / CREDENTIALS
    try:
        data = orjson.loads(credentials.read_bytes())
        org, key_name = str(data["org"]), str(data["key"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise MembershipError(f"{credentials}: cannot read the credentials ({exc}); ask to "
                              "join first ('healthmesh network credentials DIR --org ...')") \
            from None
    membership = _verified(cert_pem, ca_pem, crl_pem, "the certificate")
    try:
        key = load_private_key(folder / key_name)
    except HealthmeshError as exc:
        raise MembershipError(str(exc)) from None
    _same_key(membership, key, f"the key {folder / key_name}")
    if f"Organization/{membership.org_id}" != org:
        raise MembershipError(f"the certificate is for Organization/{membership.org_id}, but "
                              f"{credentials} is for {org}")
    _write(folder / CA_FILE, ca_pem)
    if crl_pem is not None:
        _write(folder / CRL_FILE, crl_pem)
    _write(folder / MEMBER_CERT, membership.cert_pem)
    return membership


# -- agreements ------------------------------------------------------------------------

def sign_agreement_file(path: Path, identity: Identity) -> Agreement:
    """Add ``identity``'s signature to the agreement JSON file ``path`` (atomically)."""
    path = Path(path)
    agreement = load_agreement_file(path)
    try:
        signed = sign_agreement(agreement, identity)
    except AgreementError as exc:
        raise MembershipError(f"{path}: {exc}") from None
    _write(path, orjson.dumps(signed.to_json(), option=orjson.OPT_INDENT_2) + b"\n",
           mode=_mode(path, 0o644))
    return signed


def member_directory(node_folder: Path, cert_pems: Iterable[bytes],
                     names: list[str] | None = None) -> MemberDirectory:
    """The parties' keys from their certificates (plus the node's own), each verified
    against the node's own trust anchor and revocation list (a bad one is named by its
    entry in ``names`` when given)."""
    folder = Path(node_folder) / NETWORK_DIR
    ca_path = folder / CA_FILE
    if not ca_path.exists():
        raise MembershipError(f"{node_folder} has no {ca_path.name} in {folder} (install the "
                              "membership first: 'healthmesh node join DIR --cert ...')")
    directory = MemberDirectory(ca_path.read_bytes(), folder / CRL_FILE)
    pems = list(cert_pems)
    labels = [_label(names, n) for n in range(1, len(pems) + 1)]
    if (folder / MEMBER_CERT).exists():
        pems.append((folder / MEMBER_CERT).read_bytes())
        labels.append(str(folder / MEMBER_CERT))
    certs: dict[str, str] = {}
    for label, pem in zip(labels, pems, strict=True):
        membership = _verified(pem, directory.ca_pem, directory.crl(), label)
        certs[f"Organization/{membership.org_id}"] = membership.cert_pem.decode()
    directory.lookup = certs.get
    return directory


def install_agreement(node_folder: Path, path: Path, directory: MemberDirectory) -> Path:
    """Copy an agreement into ``DIR/network/agreements/<id>.json`` once every party has
    signed it, every signature verifies with ``directory`` and the node is a party."""
    node_folder, path = Path(node_folder), Path(path)
    settings = _node_config(node_folder)
    agreement = load_agreement_file(path)
    org = str(settings.get("organization", ""))
    if not org:
        raise MembershipError(f"{node_folder / NODE_FILE} has no organization setting "
                              "(join the network first: 'healthmesh node join')")
    if org not in agreement.parties():
        raise MembershipError(f"{path}: {org} is not a party to agreement {agreement.id} "
                              f"(parties: {', '.join(agreement.parties())})")
    unknown = [p for p in agreement.signatures if directory.lookup(p) is None]
    if unknown:
        raise MembershipError(f"{path}: no certificate of {', '.join(unknown)} to check "
                              "its signature (give the parties' certificates)")
    try:
        verify_agreement_signatures(agreement, directory.public_key, require_all=True)
    except AgreementError as exc:
        raise MembershipError(f"{path}: {exc}") from None
    target = node_folder / NETWORK_DIR / "agreements" / f"{agreement.id}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, orjson.dumps(agreement.to_json(), option=orjson.OPT_INDENT_2))
    return target


def load_agreement_file(path: Path) -> Agreement:
    """An agreement file (raises :class:`AgreementFileError` naming the file)."""
    try:
        return load_agreement(path)
    except AgreementError as exc:
        raise AgreementFileError(str(exc)) from None


# -- node.toml -------------------------------------------------------------------------

def _node_config(node_folder: Path) -> dict[str, Any]:
    """The ``[node]`` settings of a node folder (raises if it is not one)."""
    path = Path(node_folder) / NODE_FILE
    if not path.exists():
        raise MembershipError(f"{node_folder} is not a node folder (no {NODE_FILE}; create one "
                              f"with 'healthmesh node init {node_folder}')")
    data = _read_toml(path)
    node = data.get("node", data)
    if not isinstance(node, dict):
        raise MembershipError(f"{path}: [node] must be a table")
    return node


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MembershipError(f"{path}: not valid TOML: {exc}") from None


def set_node_settings(node_folder: Path, values: dict[str, str | int | bool]) -> None:
    """Set ``values`` in ``node.toml``'s ``[node]`` table, keeping every other setting.

    The file is parsed and written again (atomically), so comments are not kept. Values
    must be strings, integers, floats or booleans; a file holding anything else (arrays,
    dates, nested tables) is left alone and the error names the key to edit by hand."""
    path = Path(node_folder) / NODE_FILE
    data = _read_toml(path)
    if "node" in data:
        node = data["node"]
        rest = {k: v for k, v in data.items() if k != "node"}
    else:  # settings at the top level (load_settings accepts both)
        node, rest = data, {}
    if not isinstance(node, dict):
        raise MembershipError(f"{path}: [node] must be a table")
    expected = {**{k: v for k, v in rest.items() if not isinstance(v, dict)},
                "node": {**node, **values},
                **{k: v for k, v in rest.items() if isinstance(v, dict)}}
    lines = [f"{_toml_key(k)} = {_toml_value(v, path, k)}" for k, v in expected.items()
             if not isinstance(v, dict)]
    for table, entries in expected.items():
        if isinstance(entries, dict):
            lines += ["", f"[{_toml_key(table)}]"] if lines else [f"[{_toml_key(table)}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v, path, f'{table}.{k}')}"
                      for k, v in entries.items()]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != expected:  # pragma: no cover - a bug in the writer above
        raise MembershipError(f"{path}: could not rewrite the settings faithfully; "
                              f"set {', '.join(values)} by hand")
    _write(path, text.encode("utf-8"), mode=_mode(path, 0o644))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return orjson.dumps(text).decode()  # JSON escapes are valid TOML basic-string escapes


def _toml_value(value: Any, path: Path, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise MembershipError(f"{path}: cannot rewrite {key} (a {type(value).__name__}); set "
                          "organization and hub_url in the [node] table by hand")


# -- helpers ---------------------------------------------------------------------------

def _csr(key: Ed25519PrivateKey, org_id: str, name: str, roles: Iterable[str]) -> bytes:
    try:
        return make_csr(key, org_id, name, check_roles(roles))
    except UnknownRole:
        raise
    except HealthmeshError as exc:
        raise MembershipError(str(exc)) from None


def _check_org_id(org_id: str) -> None:
    if org_id == HUB_ORG:
        raise MembershipError(f"organisation id {HUB_ORG!r} is reserved for the hub")
    if not _AGREEMENT_ORG.fullmatch(org_id):
        raise MembershipError(f"organisation id {org_id!r} is not valid: use 1-64 letters, "
                              "digits, '.' or '-', starting with a letter or digit")


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise MembershipError(f"hub URL {url!r} is not an http(s) URL")
    return url


def _label(names: list[str] | None, number: int) -> str:
    return names[number - 1] if names and len(names) >= number else f"certificate {number}"


def _verified(cert_pem: bytes, ca_pem: bytes, crl_pem: bytes | None, what: str) -> Membership:
    try:
        return verify_membership(cert_pem, ca_pem, crl_pem)
    except HealthmeshError as exc:
        raise MembershipError(f"{what}: {exc}") from None


def _node_key(node_folder: Path) -> Ed25519PrivateKey:
    key = load_node_key(node_folder)
    if key is None:
        raise MembershipError(f"{node_folder} has no node key ({node_folder / NODE_KEY}): ask "
                              "to join first ('healthmesh node join DIR --org ID ...')")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _same_key(membership: Membership, key: Ed25519PrivateKey, whose: str) -> None:
    if _raw(membership.public_key) != _raw(key.public_key()):
        raise MembershipError(f"the certificate of Organization/{membership.org_id} (serial "
                              f"{membership.serial:x}) was made for another key, not {whose}")


def _mode(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` atomically (a temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MembershipError(f"cannot write {path}: {exc.strerror}") from None
