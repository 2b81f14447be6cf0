"""The node agent: connects *out* to the hub, so a hospital opens no inbound port.

Runs as a thread of ``healthmesh serve`` when the node has a ``hub_url``. It
long-polls the hub for tasks addressed to this node, hands each to the
:class:`~healthmesh.network.tasks.TaskRunner` (which checks the task against the
node's own agreements and consents, runs the vetted algorithm, applies disclosure
control and audits the release), and posts the signed answer back. Results held
for a steward's review are posted once approved. When the hub cannot be reached
the agent retries with exponential back-off (1 s doubling to 30 s); nothing is lost,
since the task log at the node is durable and answers are re-sent.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx

from healthmesh.errors import ConfigError, HealthmeshError
from healthmesh.network.client import HubClient, HubUnavailable
from healthmesh.network.members import Identity, MemberDirectory
from healthmesh.network.tasklog import Answer
from healthmesh.network.tasks import TaskRunner
from healthmesh.node import Node
from healthmesh.security import RevokedCertificate, verify_membership

__all__ = ["NETWORK_DIR", "NodeAgent", "node_identity"]

log = logging.getLogger("healthmesh.agent")
NETWORK_DIR = "network"
CRL_REFRESH_SECONDS = 300.0
CATALOGUE_SECONDS = 3600.0


def node_identity(node: Node) -> Identity:
    """The node's network identity: its ed25519 key (the one that signs its audit log),
    its membership certificate and the authority's certificate, in ``DIR/network/``."""
    from healthmesh.audit import load_node_key

    folder = node.folder / NETWORK_DIR
    cert, ca = folder / "member-cert.pem", folder / "ca-cert.pem"
    if not cert.exists() or not ca.exists():
        raise ConfigError(f"{node.folder} has no network membership ({cert} and {ca} are "
                          "needed; 'healthmesh network up' or 'healthmesh node join' make them)")
    membership = verify_membership(cert.read_bytes(), ca.read_bytes(), _crl(folder))
    org = f"Organization/{membership.org_id}"
    if node.settings.organization and node.settings.organization != org:
        raise ConfigError(f"the node's organization setting ({node.settings.organization}) "
                          f"differs from its membership certificate ({org})")
    tls_ca = node.folder / node.settings.hub_tls_ca if node.settings.hub_tls_ca else None
    return Identity(org, load_node_key(node.folder), cert.read_text(), ca.read_bytes(),
                    node.settings.hub_url.rstrip("/"), tls_ca)


def _crl(folder: Path) -> bytes | None:
    path = folder / "crl.pem"
    return path.read_bytes() if path.exists() else None


class NodeAgent:
    """The polling loop (a daemon thread); ``stop()`` ends it within a second."""

    def __init__(self, node: Node, *, transport: httpx.BaseTransport | None = None) -> None:
        if not node.settings.hub_url:
            raise ConfigError("the node has no hub_url setting: it is not in a network")
        self.node = node
        self.identity = node_identity(node)
        self.client = HubClient(self.identity, base_url=node.settings.hub_url,
                                transport=transport)
        self.runner = TaskRunner(node, self.identity, self._directory)
        self.poll = float(node.settings.agent_poll_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="healthmesh-agent", daemon=True)
        self._crl_checked = 0.0
        self._described = 0.0

    def start(self) -> None:
        self._thread.start()
        threading.Thread(target=self._warm, name="healthmesh-agent-warm", daemon=True).start()

    def _warm(self) -> None:
        started = time.monotonic()
        try:
            self.runner.warm()
            log.info("ready: analytic tables and consented populations prepared in %.1f s",
                     time.monotonic() - started)
        except Exception:  # warming is an optimisation: a failure must not stop the agent
            log.exception("warm-up failed")
        try:
            self._describe()
        except HubUnavailable as exc:
            log.warning("catalogue entry not sent (%s); the agent retries hourly", exc)
            self._described = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self.client.close()
        self._thread.join(timeout=5)
        self.runner.close()

    # -- loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = 1.0
            except HubUnavailable as exc:
                if self._stop.is_set():
                    return
                if exc.status in (401, 403):  # not an outage: the hub refuses this node
                    log.error("the hub refuses this node (%s); is its membership revoked or "
                              "expired? retrying in %.0f s", exc, backoff)
                else:
                    log.warning("hub unavailable (%s); retrying in %.0f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
            except Exception:  # a bug must not kill the agent: log it and go on
                log.exception("node agent error")
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)

    def poll_once(self) -> None:
        """Send held answers, then wait for tasks and answer each."""
        self._refresh_crl()
        if self._described:  # the first description follows the warm-up
            self._describe()
        for task_id, answer in self.runner.unsent():
            self._post(task_id, answer)
        data = self.client.request("GET", f"/agent/tasks?wait={self.poll:g}",
                                   timeout=self.poll + 15)
        for item in data.get("tasks", []):
            answer = self.runner.run(str(item.get("id")), str(item.get("token")))
            self._post(str(item.get("id")), answer)

    def _post(self, task_id: str, answer: Answer) -> None:
        try:
            self.client.request("POST", f"/agent/tasks/{task_id}/result", answer.to_json())
        except HubUnavailable as exc:
            if exc.status is None:
                raise  # the hub is down: keep the answer, send it on reconnect
            log.warning("hub refused the answer to task %s: %s", task_id, exc)
        self.runner.mark_sent(task_id)

    def _describe(self) -> None:
        """Tell the hub's dataset catalogue what this node holds (hourly): its tables and
        columns, the agreements it signed, and its size rounded to hundreds of patients."""
        if time.monotonic() - self._described < CATALOGUE_SECONDS and self._described:
            return
        patients = self.node.store.counts().get("Patient", 0)
        self.client.request("POST", "/agent/catalogue", {
            "name": self.node.settings.name, "tables": self.runner.tables.tables(),
            "patients": f"about {round(patients, -2):,}" if patients >= 100 else "under 100",
            "agreements": sorted(p.stem for p in self.runner.agreements.glob("*.json")),
            "described": time.time(),
        })
        self._described = time.monotonic()

    # -- trust material ------------------------------------------------------------------

    def _directory(self) -> MemberDirectory:
        """Members' certificates as the hub lists them, verified here against the node's
        own copy of the authority certificate and revocation list."""
        members = {m["org"]: m["cert"] for m in self.client.request("GET", "/members")["members"]}
        folder = self.node.folder / NETWORK_DIR
        return MemberDirectory(self.identity.ca_pem, folder / "crl.pem", members.get)

    def _refresh_crl(self) -> None:
        if time.monotonic() - self._crl_checked < CRL_REFRESH_SECONDS:
            return
        self._crl_checked = time.monotonic()
        try:
            response = self.client.http.get("/network/crl")
        except httpx.HTTPError:
            return
        if response.status_code != 200:
            return
        try:  # only a list signed by our own authority replaces the one we hold
            verify_membership(self.identity.cert_pem.encode(), self.identity.ca_pem,
                              response.content)
        except RevokedCertificate as exc:
            log.error("this node's own membership is revoked: %s", exc)
        except HealthmeshError as exc:
            log.warning("ignoring a revocation list that does not verify: %s", exc)
            return
        path = self.node.folder / NETWORK_DIR / "crl.pem"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(response.content)
        tmp.replace(path)
