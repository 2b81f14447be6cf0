"""A whole network on one machine: ``healthmesh network up DIR`` / ``network down DIR``.

Layout of DIR::

    DIR/network.json        addresses and process ids of the running network
    DIR/authority/          the network authority (CA key and certificate, revocations)
    DIR/hub/                the hub's folder (healthmesh hub serve)
    DIR/nodes/<site>/       one node folder per site (healthmesh serve), each with
                            network/ (membership certificate, CA, CRL, agreements)
    DIR/analyst/            an analyst's credentials (research and public-health roles)
    DIR/data/               the synthetic population (healthmesh synth layout)
    DIR/logs/               one log file per process

Every process listens on 127.0.0.1 only. ``network up`` plays every party of the demo
agreements and signs them with each party's key — in a real network each organisation's
steward signs with its own key (``healthmesh agreement sign``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson

from healthmesh.audit import load_or_create_node_key
from healthmesh.errors import ConfigError, HealthmeshError
from healthmesh.network.agreements import Agreement, save_agreement
from healthmesh.network.hub_state import HubState
from healthmesh.network.members import Identity, sign_agreement, write_credentials
from healthmesh.security import NetworkAuthority, generate_key, make_csr

__all__ = ["ANALYST", "NetworkLayout", "network_down", "network_status", "network_up", "tls_ca",
           "site_kind"]

ANALYST = "Organization/analyst"
SITE_ROLES = {"hospital": ["provider"], "clinic": ["provider"], "lab": ["lab"],
              "insurer": ["payer"], "pharmacy": ["pharmacy"], "dental": ["provider"],
              "public-health": ["public-health"]}
ALL_TABLES = ["patient", "condition", "observation", "medication", "procedure", "encounter",
              "immunization", "claim", "questionnaire_answer"]
ALL_STRATA = ["sex", "age_band", "year", "month", "site", "state", "city", "postal_code",
              "country"]
START_TIMEOUT = 600.0  # large nodes prepare their analytic tables before they are ready


@dataclass(frozen=True)
class NetworkLayout:
    root: Path

    @property
    def authority(self) -> Path:
        return self.root / "authority"

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def analyst(self) -> Path:
        return self.root / "analyst"

    @property
    def state_file(self) -> Path:
        return self.root / "network.json"

    def node(self, site: str) -> Path:
        return self.root / "nodes" / site


Say = Callable[[str], None]


def site_kind(site: str) -> str:
    """The kind of a site name: ``hospital`` for ``hospital`` and ``hospital-2`` (several
    sites of one kind load the same generated data; benchmarks use this)."""
    base, _, number = site.rpartition("-")
    return base if base and number.isdigit() else site


def network_up(root: Path, *, sites: list[str], patients: int, seed: int,
               data: Path | None = None, port: int = 8700, say: Say = print) -> dict[str, Any]:
    """Create (first time) and start a local network; return its addresses."""
    layout = NetworkLayout(Path(root))
    if layout.state_file.exists() and _running(orjson.loads(layout.state_file.read_bytes())):
        raise ConfigError(f"a network is already running from {root} "
                          f"(stop it with 'healthmesh network down {root}')")
    unknown = [s for s in sites if site_kind(s) not in SITE_ROLES]
    if unknown or not sites:
        raise ConfigError(f"unknown site kind(s): {', '.join(unknown) or '(none)'} "
                          f"(known: {', '.join(SITE_ROLES)})")
    layout.root.mkdir(parents=True, exist_ok=True)
    data = data or _synthesise(layout.root / "data", sites, patients, seed, say)
    ports = _ports(port, len(sites) + 1)
    hub_url = f"https://127.0.0.1:{ports[0]}"
    authority = _authority(layout)
    _setup_hub(layout, authority)
    for site in sites:
        _setup_node(layout, authority, site, hub_url, data, say)
    _setup_tls(layout, sites)
    _setup_analyst(layout, authority, hub_url)
    _agreements(layout, sites)
    return _start(layout, sites, ports, hub_url, say)


# -- set-up (idempotent) -------------------------------------------------------------------

def _synthesise(folder: Path, sites: list[str], patients: int, seed: int, say: Say) -> Path:
    from healthmesh.synth import generate

    manifest = folder / "manifest.json"
    if manifest.exists():
        made = orjson.loads(manifest.read_bytes())["parameters"]["sites"]
        missing = sorted({site_kind(s) for s in sites} - set(made))
        if not missing:
            return folder
        raise ConfigError(f"{folder} was generated without site(s) {', '.join(missing)}; "
                          "remove it or give --data")
    say(f"generating {patients} synthetic persons for {', '.join(sites)} into {folder} ...")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)  # a half-written earlier attempt
    generate(folder, patients=patients, sites=sorted({site_kind(s) for s in sites}), seed=seed)
    return folder


def _authority(layout: NetworkLayout) -> NetworkAuthority:
    if (layout.authority / "authority-cert.pem").exists():
        return NetworkAuthority.open(layout.authority)
    return NetworkAuthority.create(layout.authority, "healthmesh local network")


def _membership(authority: NetworkAuthority, folder: Path, key: Any, org_id: str, name: str,
                roles: list[str], cert_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cert = folder / cert_name
    if not cert.exists():
        csr = make_csr(key, org_id, name, roles)
        _write(cert, authority.sign_membership(csr, roles))
    _write(folder / "ca-cert.pem", authority.cert_pem)
    _write(folder / "crl.pem", authority.crl_pem())


TLS_HOSTS = ["127.0.0.1", "localhost"]


def _setup_tls(layout: NetworkLayout, sites: list[str]) -> None:
    """A local CA for the network (DIR/tls) and a server certificate for the hub and each
    node; each member gets a copy of the CA certificate to trust the others."""
    from healthmesh.security.tls import TlsFiles, create_tls

    ca = TlsFiles(layout.root).ca_cert
    for folder in (layout.hub, *(layout.node(s) for s in sites)):
        folder.mkdir(parents=True, exist_ok=True)
        if not TlsFiles(folder).server_cert.exists():
            create_tls(folder, TLS_HOSTS, ca_folder=layout.root)
        _write(TlsFiles(folder).folder / "network-ca.pem", ca.read_bytes())


def tls_ca(root: Path) -> Path:
    """The certificate that signed every TLS certificate of the local network at ``root``."""
    return Path(root) / "tls" / "ca-cert.pem"


def _setup_hub(layout: NetworkLayout, authority: NetworkAuthority) -> None:
    key = load_or_create_node_key(layout.hub)
    _membership(authority, layout.hub, key, "hub", "Network hub", ["hub"], "hub-cert.pem")
    HubState(layout.hub / "hub.sqlite")


def _setup_node(layout: NetworkLayout, authority: NetworkAuthority, site: str, hub_url: str,
                data: Path, say: Say) -> None:
    from healthmesh.ingest.loader import ingest
    from healthmesh.node import init_node, open_node

    folder = layout.node(site)
    kind = site_kind(site)
    name = _site_name(data, kind) + ("" if kind == site else f" ({site})")
    init_node(folder, name=name)
    _set_node_config(folder, name, site, hub_url)
    key = load_or_create_node_key(folder)
    _membership(authority, folder / "network", key, site, name, SITE_ROLES[kind],
                "member-cert.pem")
    with open_node(folder) as node:
        if not node.store.counts():
            say(f"loading {site} ({data / kind}) ...")
            stats = ingest(node, [data / kind], rejects_path=folder / "rejects/network-up.ndjson")
            say(f"  {stats.created} resources, {stats.rejected} rejected")


def _set_node_config(folder: Path, name: str, site: str, hub_url: str) -> None:
    label = name.replace('"', "'")
    (folder / "node.toml").write_text(
        f'[node]\nname = "{label}"\norganization = "Organization/{site}"\n'
        f'hub_url = "{hub_url}"\nagent_poll_seconds = 20\n'
        'tls_certificate = "tls/server-cert.pem"\ntls_private_key = "tls/server-key.pem"\n'
        'hub_tls_ca = "tls/network-ca.pem"\n', "utf-8")


def _site_name(data: Path, site: str) -> str:
    try:
        first = (data / site / "Organization.ndjson").read_bytes().split(b"\n", 1)[0]
        return str(orjson.loads(first).get("name") or site)
    except (OSError, orjson.JSONDecodeError):
        return site


def _setup_analyst(layout: NetworkLayout, authority: NetworkAuthority, hub_url: str) -> None:
    folder = layout.analyst
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "key.pem"
    if not key_path.exists():
        generate_key(key_path)
    from healthmesh.security import load_private_key

    key = load_private_key(key_path)
    _membership(authority, folder, key, "analyst", "Network Analytics Office",
                ["research", "public-health"], "member-cert.pem")
    _write(folder / "tls-ca.pem", tls_ca(layout.root).read_bytes())
    write_credentials(folder / "credentials.json", org=ANALYST, hub=hub_url, key="key.pem",
                      cert="member-cert.pem", ca="ca-cert.pem", tls_ca="tls-ca.pem")


def demo_agreements(sites: list[str]) -> list[Agreement]:
    """The agreements of the demo network: ``research`` (opt-in consent, min cell 10),
    ``public-health`` indicators (permitted by law, min cell 10) and ``research-dp``
    (counts with Laplace noise, epsilon 1 per query, a total budget of 3 per node)."""
    providers = tuple(f"Organization/{s}" for s in sites)
    today = date.today()
    common: dict[str, Any] = {
        "requester": ANALYST, "providers": list(providers), "tables": ALL_TABLES,
        "strata": ALL_STRATA, "valid_from": today.replace(month=1, day=1).isoformat(),
        "valid_to": today.replace(year=today.year + 2, month=12, day=31).isoformat(),
        "retention_days": 365, "deadline_seconds": 30,
    }
    research = Agreement.from_json({
        **common, "id": "research", "title": "Cardiometabolic research across the network",
        "purposes": ["HRESCH"],
        "algorithms": ["count", "summary", "crosstab", "prevalence", "incidence"],
        "disclosure": {"min_cell": 10, "max_repeats": 50},
    })
    public_health = Agreement.from_json({
        **common, "id": "public-health", "title": "Public-health indicators",
        "purposes": ["PUBHLTH"], "algorithms": ["indicator", "count", "prevalence", "incidence"],
        "disclosure": {"min_cell": 10, "max_repeats": 100},
    })
    research_dp = Agreement.from_json({
        **common, "id": "research-dp", "title": "Research counts with differential privacy",
        "purposes": ["HRESCH"], "algorithms": ["count"], "strata": ["sex", "age_band", "site"],
        "disclosure": {"min_cell": 10, "epsilon_per_query": 1.0, "total_epsilon": 3.0,
                       "max_repeats": 50},
    })
    return [research, public_health, research_dp]


def _agreements(layout: NetworkLayout, sites: list[str]) -> None:
    signers = {ANALYST: Identity.load(layout.analyst / "credentials.json")}
    for site in sites:
        folder = layout.node(site)
        signers[f"Organization/{site}"] = Identity(
            f"Organization/{site}", load_or_create_node_key(folder), "", b"", "")
    state = HubState(layout.hub / "hub.sqlite")
    for agreement in demo_agreements(sites):
        for party in agreement.parties():
            agreement = sign_agreement(agreement, signers[party])
        for site in sites:
            save_agreement(layout.node(site) / "network" / "agreements", agreement)
        state.put_agreement(agreement.to_json())
    _register(layout, state, sites)


def _register(layout: NetworkLayout, state: HubState, sites: list[str]) -> None:
    from healthmesh.security import verify_membership

    certs = [layout.hub / "hub-cert.pem", layout.analyst / "member-cert.pem",
             *(layout.node(s) / "network" / "member-cert.pem" for s in sites)]
    ca = (layout.authority / "authority-cert.pem").read_bytes()
    for path in certs:
        membership = verify_membership(path.read_bytes(), ca)
        state.put_member(f"Organization/{membership.org_id}", membership.org_name,
                         list(membership.roles), path.read_text())


# -- processes -------------------------------------------------------------------------

def _start(layout: NetworkLayout, sites: list[str], ports: list[int], hub_url: str,
           say: Say) -> dict[str, Any]:
    """Start the hub and the nodes and wait until all are ready; if anything fails, stop
    what was started (no process outlives a failed 'network up')."""
    logs = layout.root / "logs"
    logs.mkdir(exist_ok=True)
    started = time.time()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["hub"] = _spawn(["hub", "serve", str(layout.hub), "--port", str(ports[0])],
                                  logs / "hub.log")
        _wait_http(f"{hub_url}/health", processes["hub"], logs / "hub.log", layout.root)
        nodes = {}
        for site, port in zip(sites, ports[1:], strict=True):
            processes[site] = _spawn(["serve", str(layout.node(site)), "--port", str(port)],
                                     logs / f"{site}.log")
            nodes[site] = {"fhir": f"https://127.0.0.1:{port}/fhir",
                           "org": f"Organization/{site}"}
        for site, port in zip(sites, ports[1:], strict=True):
            _wait_http(f"https://127.0.0.1:{port}/fhir/metadata", processes[site],
                       logs / f"{site}.log", layout.root)
        state = {"hub": hub_url, "nodes": nodes, "credentials": str(
            (layout.analyst / "credentials.json").resolve()),
            "tls_ca": str(tls_ca(layout.root).resolve()),
            "pids": {name: p.pid for name, p in processes.items()}, "started": started}
        layout.state_file.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        _wait_connected(layout, sites, started)
    except BaseException:
        for process in processes.values():
            _signal(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            _CHILDREN.pop(process.pid, None)
        layout.state_file.unlink(missing_ok=True)
        raise
    say(f"network up: hub {hub_url}, {len(sites)} nodes")
    return state


# Processes started by this interpreter, kept so that 'network down' in the same process
# (tests, 'healthmesh demo') reaps them; 'network up' run from a shell leaves them running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "healthmesh", *args], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    return process


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, root: Path) -> None:
    from healthmesh.security.tls import client_context

    verify = client_context(tls_ca(root))
    until = time.monotonic() + START_TIMEOUT
    while time.monotonic() < until:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise HealthmeshError(f"{url}: the process exited ({process.returncode}):\n{tail}")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise HealthmeshError(f"{url} did not answer within {START_TIMEOUT:.0f} s (see {log})")


def _wait_connected(layout: NetworkLayout, sites: list[str], since: float) -> None:
    """Until every node agent polls the hub and is ready (it describes itself in the
    catalogue once its analytic tables and consented populations are prepared), so the
    first question reaches all and is answered within the agreements' deadlines."""
    from healthmesh.network.client import HubClient

    client = HubClient(Identity.load(layout.analyst / "credentials.json"))
    try:
        until = time.monotonic() + START_TIMEOUT
        wanted = {f"Organization/{s}" for s in sites}
        while time.monotonic() < until:
            members = client.request("GET", "/members")["members"]
            ready = {d["org"] for d in client.request("GET", "/catalogue")["datasets"]
                     if d.get("described", 0) >= since}  # described by this run's agents
            if wanted <= {m["org"] for m in members if m.get("connected")} & ready:
                return
            time.sleep(0.2)
        raise HealthmeshError("node agents did not connect to the hub in time "
                              f"(see {layout.root / 'logs'})")
    finally:
        client.close()


def network_status(root: Path) -> dict[str, Any]:
    layout = NetworkLayout(Path(root))
    if not layout.state_file.exists():
        raise ConfigError(f"{root} holds no network (run 'healthmesh network up {root}')")
    state = orjson.loads(layout.state_file.read_bytes())
    state["running"] = {name: _alive(pid) for name, pid in state["pids"].items()}
    return dict(state)


def network_down(root: Path, *, timeout: float = 15.0) -> list[str]:
    """Stop every process of the network (SIGTERM, then SIGKILL after ``timeout``)."""
    state = network_status(root)
    pids = {name: pid for name, pid in state["pids"].items() if _alive(pid)}
    for pid in pids.values():
        _signal(pid, signal.SIGTERM)
    until = time.monotonic() + timeout
    while time.monotonic() < until and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    for pid in state["pids"].values():
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout)
    NetworkLayout(Path(root)).state_file.unlink(missing_ok=True)
    return sorted(pids)


def _running(state: dict[str, Any]) -> bool:
    return any(_alive(pid) for pid in state.get("pids", {}).values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    child = _CHILDREN.get(pid)
    if child is not None:  # a zombie child of ours counts as stopped
        return child.poll() is None
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _ports(first: int, count: int) -> list[int]:
    import socket

    if first == 0:
        ports = []
        for _ in range(count):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports.append(int(sock.getsockname()[1]))
        return ports
    ports = list(range(first, first + count))
    for candidate in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                raise ConfigError(f"port {candidate} is in use (choose --port)") from None
    return ports


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
