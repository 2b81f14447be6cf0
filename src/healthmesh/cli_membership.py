"""``healthmesh`` commands that enrol the members of a real (multi-machine) network.

The authority's administrator (``network init|issue|revoke|crl``), the hub's operator
(``hub init|register``), a node's administrator (``node join``), an analyst
(``network credentials``) and every party's steward (``agreement sign|install|publish``)
each run their own step with their own key. Thin layer over
:mod:`healthmesh.network.membership`; registered on the main app by :mod:`healthmesh.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, node_app, out
from healthmesh.cli_network import hub_app, network_app
from healthmesh.errors import HealthmeshError
from healthmesh.network import membership as ms
from healthmesh.security import verify_membership

agreement_app = typer.Typer(help="Sign, install and publish data-sharing agreements.",
                            no_args_is_help=True)
app.add_typer(agreement_app, name="agreement")


def _say(text: str) -> None:
    out.print(text, highlight=False, markup=False)


def _error(exc: HealthmeshError) -> NoReturn:
    """Exit with the code of a membership error: bad values 2, bad agreement file 4,
    anything else about folders, certificates or signatures 3."""
    if isinstance(exc, ms.BadValue):
        _fail(str(exc), ExitCode.USAGE)
    if isinstance(exc, ms.AgreementFileError):
        _fail(str(exc), ExitCode.INPUT)
    _fail(str(exc), ExitCode.CONFIG)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read the {what} {path}: {exc.strerror or exc}", ExitCode.INPUT)


def _roles(text: str) -> list[str]:
    try:
        return ms.check_roles(text.split(","))
    except ms.UnknownRole as exc:
        _fail(f"--roles: {exc}", ExitCode.USAGE)


RolesOpt = Annotated[str, typer.Option("--roles", help="Comma-separated roles (provider, lab, "
                                                       "payer, pharmacy, public-health, "
                                                       "research, patient-app, hub).")]


# -- the network authority -------------------------------------------------------------

@network_app.command("init")
def network_init(
    folder: Annotated[Path, typer.Argument(help="Authority folder to create (keep it "
                                                "offline and backed up).")],
    name: Annotated[str, typer.Option("--name", help="Name of the network.")],
    json_out: JsonFlag = False,
) -> None:
    """Create the network authority: key, certificate (the trust anchor), revocation list."""
    try:
        authority = ms.init_authority(folder, name)
    except HealthmeshError as exc:
        _error(exc)
    data = {"folder": str(folder), "network": authority.network_name,
            "ca": str(folder / ms.AUTHORITY_CERT), "crl": str(folder / ms.CRL_FILE)}
    if json_out:
        _emit_json(data)
        return
    _say(f"network authority of '{authority.network_name}' created in {folder}")
    _say(f"trust anchor to give every member: {data['ca']}")
    _say(f"revocation list (valid 7 days; re-sign with 'healthmesh network crl {folder}'): "
         f"{data['crl']}")
    _say(f"the private key {folder / 'authority-key.pem'} never leaves this folder")


@network_app.command("issue")
def network_issue(
    folder: Annotated[Path, typer.Argument(help="Authority folder.")],
    csr: Annotated[Path, typer.Argument(help="The member's signing request (member.csr).")],
    roles: RolesOpt,
    out_file: Annotated[Path, typer.Option("--out", help="Certificate file to write.")],
    days: Annotated[int, typer.Option(help="Days the membership lasts.", min=1, max=3650)] = 365,
    json_out: JsonFlag = False,
) -> None:
    """Issue a membership certificate for a signing request, granting --roles.

    The authority decides the roles; those in the request are only asked for."""
    granted = _roles(roles)
    request = _read(csr, "signing request")
    try:
        cert = ms.issue(folder, request, granted, days)
        membership = verify_membership(cert, (folder / ms.AUTHORITY_CERT).read_bytes())
    except HealthmeshError as exc:
        _error(exc)
    try:
        out_file.write_bytes(cert)
    except OSError as exc:
        _fail(f"cannot write {out_file}: {exc.strerror}", ExitCode.INPUT)
    data = {"certificate": str(out_file), "org": f"Organization/{membership.org_id}",
            "name": membership.org_name, "roles": list(membership.roles),
            "serial": f"{membership.serial:x}", "not_after": membership.not_after.isoformat(),
            "ca": str(folder / ms.AUTHORITY_CERT), "crl": str(folder / ms.CRL_FILE)}
    if json_out:
        _emit_json(data)
        return
    _say(f"issued {out_file}: {data['org']} ({membership.org_name}), roles "
         f"{', '.join(membership.roles)}, serial {data['serial']}, valid to {data['not_after']}")
    _say(f"send back to the member: {out_file}, {data['ca']} and {data['crl']}")
    _say(f"and to the hub operator: {out_file} (healthmesh hub register HUBDIR {out_file})")


@network_app.command("revoke")
def network_revoke(
    folder: Annotated[Path, typer.Argument(help="Authority folder.")],
    cert: Annotated[Path, typer.Argument(help="The certificate to revoke.")],
    reason: Annotated[str, typer.Option(help="RFC 5280 reason: keyCompromise, superseded, "
                                             "cessationOfOperation, affiliationChanged, ...")]
    = "unspecified",
    json_out: JsonFlag = False,
) -> None:
    """Revoke a membership and re-sign the revocation list (copy it to the hub)."""
    pem = _read(cert, "certificate")
    try:
        already = ms.is_revoked(folder, pem)
        serial = ms.revoke(folder, pem, reason)
    except HealthmeshError as exc:
        _error(exc)
    crl = folder / ms.CRL_FILE
    if json_out:
        _emit_json({"serial": f"{serial:x}", "reason": reason, "already_revoked": already,
                    "crl": str(crl)})
        return
    if already:
        _say(f"serial {serial:x} was already revoked (its first reason stands); "
             f"revocation list re-signed: {crl}")
    else:
        _say(f"revoked serial {serial:x} ({reason}); new revocation list: {crl}")
    _say(f"copy it to the hub now: cp {crl} HUBDIR/crl.pem (the hub refuses the member at "
         "once; nodes fetch the list from the hub)")


@network_app.command("crl")
def network_crl(
    folder: Annotated[Path, typer.Argument(help="Authority folder.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write it here (e.g. "
                                                                "HUBDIR/crl.pem).")] = None,
) -> None:
    """Re-sign the revocation list (valid 7 days: run daily, copy it to the hub)."""
    try:
        crl = ms.refresh_crl(folder)
    except HealthmeshError as exc:
        _error(exc)
    if out_file is not None:
        try:
            out_file.write_bytes(crl)
        except OSError as exc:
            _fail(f"cannot write {out_file}: {exc.strerror}", ExitCode.INPUT)
    _say(f"revocation list re-signed: {folder / ms.CRL_FILE}"
         + (f" (and {out_file})" if out_file else ""))


@network_app.command("credentials")
def network_credentials(
    folder: Annotated[Path, typer.Argument(help="Credentials folder (created if missing).")],
    org: Annotated[str | None, typer.Option("--org", help="Organisation id (ask to join).")]
    = None,
    name: Annotated[str | None, typer.Option("--name", help="Organisation name.")] = None,
    roles: Annotated[str | None, typer.Option("--roles", help="Roles asked for, e.g. "
                                                              "research,public-health.")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Hub URL.")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Issued certificate (install).")]
    = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="The authority's certificate.")] = None,
    crl: Annotated[Path | None, typer.Option("--crl", help="The authority's revocation list.")]
    = None,
    json_out: JsonFlag = False,
) -> None:
    """Credentials of a member without a node (an analyst): ask to join, then install.

    Ask: --org --name --roles --hub (writes DIR/member.csr and DIR/credentials.json).

    Install: --cert --ca [--crl] (the certificate, trust anchor and revocation list)."""
    if cert is None and ca is None and crl is None:
        if not (org and name and roles and hub):
            _fail("give --org, --name, --roles and --hub (ask to join), or --cert and --ca "
                  "(install)", ExitCode.USAGE)
        try:
            ms.analyst_credentials(folder, org, name, _roles(roles), hub)
        except HealthmeshError as exc:
            _error(exc)
        _requested(folder / ms.CSR_FILE, roles, json_out,
                   f"healthmesh network credentials {folder} --cert CERT --ca CA --crl CRL")
        return
    if org or name or roles or hub or cert is None or ca is None:
        _fail("to install, give --cert and --ca (and --crl) only", ExitCode.USAGE)
    try:
        membership = ms.analyst_install(folder, _read(cert, "certificate"),
                                        _read(ca, "authority certificate"),
                                        _read(crl, "revocation list") if crl else None)
    except HealthmeshError as exc:
        _error(exc)
    _installed(membership, folder / ms.CREDENTIALS, json_out,
               f"use it: healthmesh query count --hub URL --credentials "
               f"{folder / ms.CREDENTIALS} ...")


def _requested(csr: Path, roles: str, json_out: bool, install: str) -> None:
    if json_out:
        _emit_json({"csr": str(csr), "roles": _roles(roles)})
        return
    _say(f"signing request written: {csr} (your key never leaves this machine)")
    _say("send it to the network authority, who runs:")
    _say(f"  healthmesh network issue AUTHDIR {csr.name} --roles {','.join(_roles(roles))} "
         "--out CERT")
    _say("then install what comes back (the certificate, the authority's certificate and "
         "its revocation list):")
    _say(f"  {install}")


def _installed(membership: Any, where: Path, json_out: bool, then: str) -> None:
    data = {"org": f"Organization/{membership.org_id}", "name": membership.org_name,
            "roles": list(membership.roles), "serial": f"{membership.serial:x}",
            "not_after": membership.not_after.isoformat(), "installed": str(where)}
    if json_out:
        _emit_json(data)
        return
    _say(f"membership installed: {data['org']} ({membership.org_name}), roles "
         f"{', '.join(membership.roles)}, valid to {data['not_after']}")
    _say(then)


# -- the hub ---------------------------------------------------------------------------

@hub_app.command("init")
def hub_init(
    folder: Annotated[Path, typer.Argument(help="Hub folder to create.")],
    authority: Annotated[Path, typer.Option("--authority", help="Authority folder.")],
    json_out: JsonFlag = False,
) -> None:
    """Create a hub folder: key, hub certificate, trust anchor, revocation list, registry."""
    try:
        membership = ms.init_hub(folder, authority)
    except HealthmeshError as exc:
        _error(exc)
    if json_out:
        _emit_json({"folder": str(folder), "org": f"Organization/{membership.org_id}"})
        return
    _say(f"hub folder ready: {folder}")
    _say(f"register members: healthmesh hub register {folder} CERT...")
    _say(f"serve it:         healthmesh hub serve {folder} --host 0.0.0.0 --port 8700")


@hub_app.command("register")
def hub_register(
    folder: Annotated[Path, typer.Argument(help="Hub folder.")],
    certs: Annotated[list[Path], typer.Argument(help="Members' certificates.")],
    json_out: JsonFlag = False,
) -> None:
    """Register (or renew) members from their certificates (all or none).

    Each is verified against the hub's trust anchor and revocation list."""
    pems = [_read(path, "certificate") for path in certs]
    try:
        orgs = ms.register(folder, pems, [str(path) for path in certs])
    except HealthmeshError as exc:
        _error(exc)
    if json_out:
        _emit_json({"registered": orgs})
        return
    _say(f"registered: {', '.join(orgs)}")


# -- nodes -----------------------------------------------------------------------------

@node_app.command("join")
def node_join(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    org: Annotated[str | None, typer.Option("--org", help="Organisation id (ask to join).")]
    = None,
    name: Annotated[str | None, typer.Option("--name", help="Organisation name (default: the "
                                                            "node's name).")] = None,
    roles: Annotated[str | None, typer.Option("--roles", help="Roles asked for, e.g. "
                                                              "provider.")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Hub URL (the node connects out to "
                                                          "it).")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Issued certificate (install).")]
    = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="The authority's certificate.")] = None,
    crl: Annotated[Path | None, typer.Option("--crl", help="The authority's revocation list.")]
    = None,
    json_out: JsonFlag = False,
) -> None:
    """Join a network: ask for a membership certificate, then install it.

    Ask: --org --roles --hub (writes DIR/network/member.csr, sets node.toml's hub_url).

    Install: --cert --ca [--crl] (the certificate, trust anchor and revocation list)."""
    if cert is None and ca is None and crl is None:
        if not (org and roles and hub):
            _fail("give --org, --roles and --hub (ask to join), or --cert and --ca (install)",
                  ExitCode.USAGE)
        try:
            label = name or _node_name(folder)
            ms.join_request(folder, org, label, _roles(roles), hub)
        except HealthmeshError as exc:
            _error(exc)
        _requested(folder / ms.NETWORK_DIR / ms.CSR_FILE, roles, json_out,
                   f"healthmesh node join {folder} --cert CERT --ca CA --crl CRL")
        return
    if org or name or roles or hub or cert is None or ca is None:
        _fail("to install, give --cert and --ca (and --crl) only", ExitCode.USAGE)
    try:
        membership = ms.join_install(folder, _read(cert, "certificate"),
                                     _read(ca, "authority certificate"),
                                     _read(crl, "revocation list") if crl else None)
    except HealthmeshError as exc:
        _error(exc)
    _installed(membership, folder / ms.NETWORK_DIR, json_out,
               f"start the node: healthmesh serve {folder} (its agent connects out to the hub; "
               "no inbound port is needed)")


def _node_name(folder: Path) -> str:
    from healthmesh.settings import load_settings

    if not (folder / ms.NODE_FILE).exists():
        raise ms.MembershipError(f"{folder} is not a node folder (no {ms.NODE_FILE}; create "
                                 f"one with 'healthmesh node init {folder}')")
    return load_settings(folder).name


# -- agreements ------------------------------------------------------------------------

NodeOpt = Annotated[Path | None, typer.Option("--node", help="Sign as this node (its key).")]
CredentialsOpt = Annotated[Path | None, typer.Option("--credentials",
                                                     help="Sign as this member (credentials "
                                                          "file).")]


def _identity(node: Path | None, credentials: Path | None) -> Any:
    from healthmesh.network.members import Identity

    if (node is None) == (credentials is None):
        _fail("give exactly one of --node DIR or --credentials FILE", ExitCode.USAGE)
    try:
        if node is not None:
            return ms.load_node_identity(node)
        assert credentials is not None
        identity = Identity.load(credentials)
        membership = verify_membership(identity.cert_pem.encode(), identity.ca_pem)
        if f"Organization/{membership.org_id}" != identity.org:
            raise ms.MembershipError(f"{credentials}: the certificate is for "
                                     f"Organization/{membership.org_id}, not {identity.org}")
        return identity
    except HealthmeshError as exc:
        _error(exc)


@agreement_app.command("sign")
def agreement_sign(
    file: Annotated[Path, typer.Argument(help="Agreement JSON file (signed in place).")],
    node: NodeOpt = None, credentials: CredentialsOpt = None, json_out: JsonFlag = False,
) -> None:
    """Add your signature to an agreement file (pass the file on to the next party)."""
    identity = _identity(node, credentials)
    if not file.exists():
        _fail(f"cannot read the agreement {file}: no such file", ExitCode.INPUT)
    try:
        agreement = ms.sign_agreement_file(file, identity)
    except HealthmeshError as exc:
        _error(exc)
    missing = [p for p in agreement.parties() if p not in agreement.signatures]
    if json_out:
        _emit_json({"agreement": agreement.id, "signed_by": identity.org,
                    "signatures": sorted(agreement.signatures), "missing": missing})
        return
    _say(f"{file}: agreement {agreement.id} signed by {identity.org}")
    _say(f"still to sign: {', '.join(missing)}" if missing else
         "every party has signed: install it at each provider (healthmesh agreement install)")


@agreement_app.command("install")
def agreement_install(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    file: Annotated[Path, typer.Argument(help="Agreement JSON file signed by every party.")],
    members: Annotated[list[Path], typer.Option("--members", help="Certificate of a party "
                                                                  "(repeat for each).")] = [],  # noqa: B006
    json_out: JsonFlag = False,
) -> None:
    """Install a fully signed agreement at a node, once every signature verifies.

    The parties' certificates (--members) are checked against the node's own CA."""
    pems = [_read(path, "certificate") for path in members]
    if not file.exists():
        _fail(f"cannot read the agreement {file}: no such file", ExitCode.INPUT)
    try:
        directory = ms.member_directory(folder, pems, [str(path) for path in members])
        target = ms.install_agreement(folder, file, directory)
    except HealthmeshError as exc:
        _error(exc)
    if json_out:
        _emit_json({"installed": str(target)})
        return
    _say(f"agreement installed: {target} (the node answers tasks under it from now on)")


@agreement_app.command("publish")
def agreement_publish(
    file: Annotated[Path, typer.Argument(help="Agreement JSON file.")],
    node: NodeOpt = None, credentials: CredentialsOpt = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Hub URL (default: the member's "
                                                          "own).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Send an agreement and its signatures to the hub, as one of its parties.

    The hub checks each signature and merges them with those it holds."""
    from healthmesh.network.client import HubClient, HubUnavailable

    identity = _identity(node, credentials)
    if not file.exists():
        _fail(f"cannot read the agreement {file}: no such file", ExitCode.INPUT)
    try:
        agreement = ms.load_agreement_file(file)
    except HealthmeshError as exc:
        _error(exc)
    url = hub or identity.hub_url
    if not url:
        _fail("no hub URL: give --hub", ExitCode.USAGE)
    client = HubClient(identity, base_url=url)
    try:
        stored = client.request("POST", "/agreements", agreement.to_json())
    except HubUnavailable as exc:
        _fail(str(exc), ExitCode.UNAVAILABLE if exc.status is None else ExitCode.REJECTED)
    finally:
        client.close()
    signed = sorted(stored.get("signatures", {}))
    if json_out:
        _emit_json({"agreement": agreement.id, "hub": url, "signatures": signed})
        return
    _say(f"agreement {agreement.id} published at {url}; signed by {', '.join(signed)}")
