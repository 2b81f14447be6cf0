"""``healthmesh auth ...``: the node's OAuth clients, users and access tokens.

- ``auth client add|list`` registers apps and backend services (their organisation, the
  scopes and purposes of use they may be granted, their public keys or redirect URIs);
- ``auth user add`` creates a clinician, researcher, data steward, administrator or
  patient account (Argon2id password, optional TOTP second factor);
- ``auth token`` prints a signed access token for a registered client, for node
  administrators and scripts (audited like every token the node issues);
- ``doctor`` reports what weakens a node's security; ``tls init`` makes a local CA and a
  server certificate so a node serves HTTPS.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, out
from healthmesh.errors import ConfigError, FhirError

__all__ = ["auth_app", "ensure_client", "mint_token", "parse_ttl"]

auth_app = typer.Typer(help="OAuth 2.0 / SMART: clients, users and access tokens of a node.",
                       no_args_is_help=True)
app.add_typer(auth_app, name="auth")
client_app = typer.Typer(help="Apps and backend services allowed to ask for tokens.",
                         no_args_is_help=True)
auth_app.add_typer(client_app, name="client")
user_app = typer.Typer(help="People who sign in (clinicians, researchers, stewards, "
                       "administrators, patients).", no_args_is_help=True)
auth_app.add_typer(user_app, name="user")

_TTL = re.compile(r"^(\d{1,6})([smh]?)$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


def parse_ttl(text: str) -> int:
    """Seconds in ``300``, ``300s``, ``5m`` or ``8h`` (at most 24 hours)."""
    match = _TTL.match(text.strip())
    if match is None:
        raise ConfigError(f"--ttl must look like 300s, 5m or 8h, not '{text}'")
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not 0 < seconds <= 86400:
        raise ConfigError("--ttl must be between 1 second and 24 hours")
    return seconds


def _org(text: str | None) -> str | None:
    if not text:
        return None
    return text if text.startswith("Organization/") else f"Organization/{text}"


def _open(folder: Path) -> Any:
    from healthmesh.node import open_node

    try:
        return open_node(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)


def mint_token(node: Any, client_id: str, scope: str, purpose: str | None, *,
               org: str | None = None, patient: str | None = None, ttl: int = 300) -> Any:
    """A token for a registered client (what ``auth token`` prints)."""
    from healthmesh.auth import parse_scopes
    from healthmesh.auth.server import OAuthError

    client = node.auth.store.client(client_id)
    if client is None or client.disabled:
        raise ConfigError(f"no client '{client_id}' at this node; register it with "
                          f"'healthmesh auth client add'")
    if org and client.org and _org(org) != client.org:
        raise ConfigError(f"client '{client_id}' acts for {client.org}, not {_org(org)}")
    if purpose and purpose not in client.purposes:
        raise ConfigError(f"client '{client_id}' may use purposes "
                          f"{', '.join(client.purposes) or '(none)'}, not {purpose}")
    if patient is not None and node.fhir.store.read("Patient", patient) is None:
        raise ConfigError(f"no Patient/{patient} at this node")
    asked = parse_scopes(scope)
    granted = asked.within(parse_scopes(client.scopes))
    if str(granted) != str(asked) or not granted.resource:
        raise ConfigError(f"client '{client_id}' may be granted '{client.scopes}', "
                          f"not all of '{scope}'")
    if client.org is None and org:
        client = dataclasses.replace(client, org=_org(org))
    try:
        return node.auth.server.mint(client, granted, purpose or (
            client.purposes[0] if client.purposes else None), patient=patient, ttl=ttl,
            via="cli")
    except OAuthError as exc:
        raise ConfigError(exc.description) from None


def ensure_client(node: Any, client_id: str, org: str | None, scope: str,
                  purposes: tuple[str, ...]) -> None:
    """Register a backend client for local scripts unless it exists (demo, tests)."""
    from healthmesh.auth import Client

    if node.auth.store.client(client_id) is None:
        node.auth.store.add_client(Client(client_id, client_id, _org(org), scope, purposes,
                                          None, ()))


@auth_app.command("token")
def auth_token(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    client_id: Annotated[str, typer.Option("--client-id", help="A registered client.")],
    scope: Annotated[str, typer.Option(help="SMART scopes, e.g. 'system/*.rs'.")],
    purpose: Annotated[str | None, typer.Option(help="Purpose of use (ActReason code).")] = None,
    org: Annotated[str | None, typer.Option(help="Organisation acting (must be the "
                                             "client's).")] = None,
    patient: Annotated[str | None, typer.Option(help="Bind the token to one patient.")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 300s, 5m, 8h (at most 24h).")] = "5m",
    json_out: JsonFlag = False,
) -> None:
    """Print a signed access token for a registered client (audited)."""
    node = _open(folder)
    try:
        issued = mint_token(node, client_id, scope, purpose, org=org, patient=patient,
                            ttl=parse_ttl(ttl))
    except (ConfigError, FhirError) as exc:
        _fail(str(exc), ExitCode.USAGE)
    finally:
        node.close()
    if json_out:
        _emit_json(issued.body())
    else:
        out.print(issued.access_token, soft_wrap=True)


@client_app.command("add")
def client_add(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    client_id: Annotated[str, typer.Argument(help="Client id (letters, digits, . _ -).")],
    scope: Annotated[str, typer.Option(help="Scopes it may be granted, e.g. "
                                       "'system/*.rs'.")],
    purpose: Annotated[str, typer.Option(help="Purposes of use it may ask for, comma-"
                                         "separated (first: default).")],
    org: Annotated[str | None, typer.Option(help="Organisation it acts for.")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    jwks: Annotated[Path | None, typer.Option(help="Its public keys: a JWK Set JSON file "
                                              "(backend services).")] = None,
    redirect_uri: Annotated[list[str] | None, typer.Option(
        "--redirect-uri", help="Redirect URI of an interactive app (repeatable).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Register (or replace) a client."""
    from healthmesh.auth import Client, parse_scopes

    if not _CLIENT_ID.match(client_id):
        _fail("client id: 1-128 letters, digits, '.', '_' or '-'", ExitCode.USAGE)
    try:
        parse_scopes(scope)
    except FhirError as exc:
        _fail(str(exc), ExitCode.USAGE)
    purposes = tuple(p.strip() for p in purpose.split(",") if p.strip())
    if not purposes or not all(re.fullmatch(r"[A-Z][A-Z0-9_]{1,31}", p) for p in purposes):
        _fail("--purpose: ActReason codes such as TREAT,HRESCH", ExitCode.USAGE)
    keys = _read_jwks(jwks) if jwks else None
    uris = tuple(redirect_uri or ())
    if not keys and not uris:
        _fail("give --jwks (backend service) or --redirect-uri (interactive app)",
              ExitCode.USAGE)
    bad = [u for u in uris if not re.match(r"^(https://|http://(127\.0\.0\.1|localhost)[:/])",
                                           u)]
    if bad:
        _fail(f"redirect URIs must be https (or http on loopback): {bad[0]}", ExitCode.USAGE)
    node = _open(folder)
    try:
        node.auth.store.add_client(Client(client_id, name or client_id, _org(org), scope,
                                          purposes, keys, uris))
    finally:
        node.close()
    if json_out:
        _emit_json({"client_id": client_id, "org": _org(org), "scope": scope,
                    "purposes": list(purposes)})
    else:
        out.print(f"client {client_id} registered")


def _read_jwks(path: Path) -> dict[str, Any]:
    import jwt

    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}", ExitCode.INPUT)
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys or len(keys) > 10:
        _fail(f"{path} must be a JWK Set: {{\"keys\": [...]}} with 1-10 keys", ExitCode.INPUT)
    for key in keys:
        if not isinstance(key, dict) or any(k in key for k in ("d", "p", "q")):
            _fail(f"{path} must hold public keys only", ExitCode.INPUT)
        try:
            jwt.PyJWK(key)
        except jwt.PyJWTError as exc:
            _fail(f"{path}: a key is not a usable JWK: {exc}", ExitCode.INPUT)
    return {"keys": keys}


@client_app.command("list")
def client_list(folder: Annotated[Path, typer.Argument(help="Node folder.")],
                json_out: JsonFlag = False) -> None:
    """The registered clients."""
    node = _open(folder)
    try:
        clients = node.auth.store.clients()
    finally:
        node.close()
    rows = [{"client_id": c.client_id, "org": c.org, "scope": c.scopes,
             "purposes": list(c.purposes), "kind": "backend" if c.jwks else "interactive"}
            for c in clients]
    if json_out:
        _emit_json({"clients": rows})
        return
    for row in rows:
        out.print(f"{row['client_id']:<24} {row['kind']:<12} {row['org'] or '-':<28} "
                  f"{','.join(row['purposes']):<14} {row['scope']}")


@user_app.command("add")
def user_add(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="patient, clinician, researcher, steward or "
                                      "admin.")],
    org: Annotated[str | None, typer.Option(help="Organisation the user works for.")] = None,
    patient: Annotated[str | None, typer.Option(help="A patient user's Patient id.")] = None,
    password_file: Annotated[Path | None, typer.Option(
        help="Read the password from this file ('-': standard input).")] = None,
    totp: Annotated[bool, typer.Option("--totp", help="Enrol a TOTP second factor.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create (or replace) a user; with --totp prints the authenticator enrolment URI."""
    import pyotp

    if not _CLIENT_ID.match(username):
        _fail("user name: 1-128 letters, digits, '.', '_' or '-'", ExitCode.USAGE)
    if password_file is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    elif str(password_file) == "-":
        password = sys.stdin.readline().rstrip("\n")
    else:
        try:
            password = password_file.read_text("utf-8").rstrip("\n")
        except OSError as exc:
            _fail(f"cannot read {password_file}: {exc.strerror}", ExitCode.INPUT)
    node = _open(folder)
    try:
        if patient is not None and node.fhir.store.read("Patient", patient) is None:
            _fail(f"no Patient/{patient} at this node", ExitCode.INPUT)
        secret = node.auth.store.add_user(username, password, role, org=_org(org),
                                          patient=patient, totp=totp)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.USAGE)
    finally:
        node.close()
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="healthmesh") \
        if secret else None
    if json_out:
        _emit_json({"username": username, "role": role, "totp_uri": uri})
        return
    out.print(f"user {username} ({role}) saved")
    if uri:
        out.print(f"add to an authenticator app: {uri}")


@app.command()
def doctor(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    json_out: JsonFlag = False,
) -> None:
    """Check a node's security set-up: key files, store permissions, TLS, second factors,
    token lifetimes, membership certificate and revocation list. Exit 1 on warnings."""
    from healthmesh.auth import AUTH_FILE, AuthStore
    from healthmesh.security.doctor import diagnose
    from healthmesh.settings import load_settings

    # not open_node: a node that refuses to open (e.g. an unsafe key file) is what the
    # doctor must still examine
    try:
        settings = load_settings(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if not (folder / "node.toml").exists():
        _fail(f"{folder} is not a node folder (no node.toml)", ExitCode.CONFIG)
    users: list[tuple[str, str, bool]] = []
    if (folder / AUTH_FILE).exists():
        store = AuthStore(folder / AUTH_FILE)
        try:
            users = store.user_summaries()
        finally:
            store.close()
    findings = diagnose(folder, settings, users)
    if json_out:
        _emit_json({"findings": [f.to_dict() for f in findings]})
    else:
        marks = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]",
                 "error": "[red]error[/red]"}
        for finding in findings:
            out.print(f"{marks[finding.level]} {finding.check:<11} {finding.message}",
                      highlight=False)
    if any(f.level != "ok" for f in findings):
        raise typer.Exit(int(ExitCode.REJECTED))


tls_app = typer.Typer(help="TLS certificates for a node (a local CA for demo networks).",
                      no_args_is_help=True)
app.add_typer(tls_app, name="tls")


@tls_app.command("init")
def tls_init(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    hosts: Annotated[str, typer.Option(help="Names and addresses the node is reached at, "
                                       "comma-separated.")] = "127.0.0.1,localhost",
    json_out: JsonFlag = False,
) -> None:
    """Make a local CA (once) and a server certificate, and switch 'serve' to HTTPS."""
    from healthmesh.network.membership import set_node_settings
    from healthmesh.security.errors import SecurityError
    from healthmesh.security.tls import create_tls

    _open(folder).close()  # a node folder
    try:
        files = create_tls(folder, [h.strip() for h in hosts.split(",") if h.strip()])
    except SecurityError as exc:
        _fail(str(exc), ExitCode.USAGE)
    set_node_settings(folder, {"tls_certificate": "tls/server-cert.pem",
                               "tls_private_key": "tls/server-key.pem"})
    if json_out:
        _emit_json({"ca_certificate": str(files.ca_cert), "certificate": str(files.server_cert)})
    else:
        out.print(f"HTTPS on: 'healthmesh serve {folder}' now presents {files.server_cert}")
        out.print(f"clients trust the local CA: {files.ca_cert} (curl --cacert, httpx verify=)")


keys_app = typer.Typer(help="The node's private keys at rest.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("protect")
def keys_protect(
    folder: Annotated[Path, typer.Argument(help="Node (or hub) folder.")],
    json_out: JsonFlag = False,
) -> None:
    """Encrypt the folder's unencrypted private keys with the passphrase in the file
    HEALTHMESH_KEY_PASSPHRASE_FILE names (keep that file outside the folder)."""
    from healthmesh.security.doctor import private_key_files
    from healthmesh.security.errors import SecurityError
    from healthmesh.security.keys import (
        PASSPHRASE_ENV,
        configured_passphrase,
        is_encrypted,
        read_key_file,
        write_key_file,
    )

    try:
        secret = configured_passphrase()
    except SecurityError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if secret is None:
        _fail(f"set {PASSPHRASE_ENV} to a file holding the passphrase first", ExitCode.USAGE)
    done = []
    for path in private_key_files(folder):
        if is_encrypted(path):
            continue
        try:
            key = read_key_file(path)
            fresh = path.with_name(f".{path.name}.protect")
            fresh.unlink(missing_ok=True)
            write_key_file(fresh, key, secret)
            fresh.replace(path)  # atomic: the old or the new file, never half of one
        except SecurityError as exc:
            _fail(str(exc), ExitCode.CONFIG)
        done.append(str(path))
    if json_out:
        _emit_json({"encrypted": done})
    else:
        out.print(f"{len(done)} key(s) encrypted" + "".join(f"\n  {p}" for p in done))
