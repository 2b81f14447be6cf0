"""Clients of the hub: the signed HTTP client, and the researcher's Python API.

>>> hm = healthmesh.connect("http://127.0.0.1:8700", "researcher/credentials.json")
>>> hm.count({"name": "htn", "include": [{"condition": {"valueset": "hypertension"}}]},
...          by=["sex"], agreement="hypertension-study", purpose="HRESCH")

Every request is signed with the member's key (:mod:`healthmesh.security`); a
transport can be injected (``httpx.ASGITransport``) to run a hub in-process.
A result names every site with its status (``ok``, ``refused``, ``unreachable``,
``timeout``, ``error``) and reason, the pooled rows, and the epsilon spent; nothing
hangs: the wait ends at the agreement's deadline.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from healthmesh.errors import HealthmeshError
from healthmesh.network.members import Identity, MemberDirectory
from healthmesh.security.tls import client_context

__all__ = ["HubClient", "HubUnavailable", "Network", "QueryResult", "connect"]


class HubUnavailable(HealthmeshError):
    """The hub cannot be reached, or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HubClient:
    """Signed requests to the hub on behalf of ``identity``."""

    def __init__(self, identity: Identity, *, base_url: str | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30) -> None:
        self.identity = identity
        verify: Any = client_context(identity.tls_ca) if identity.tls_ca else True
        self.http = httpx.Client(base_url=base_url or identity.hub_url, transport=transport,
                                 timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None, *,
                timeout: float | None = None) -> Any:
        """Send a signed request; return the JSON answer (raises HubUnavailable)."""
        raw = b"" if body is None else orjson.dumps(body)
        headers = self.identity.headers(method, path, raw)
        if raw:
            headers["Content-Type"] = "application/json"
        try:
            response = self.http.request(method, path, content=raw, headers=headers,
                                         timeout=timeout or self.http.timeout)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"hub {self.http.base_url}: {exc.__class__.__name__}: {exc}") \
                from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text[:500]
            raise HubUnavailable(f"hub answered {response.status_code}: {message}",
                                 response.status_code)
        return response.json() if response.content else None

    def directory(self) -> MemberDirectory:
        """Members' certificates from the hub, each checked against our own trust anchor."""
        members = {m["org"]: m["cert"] for m in self.request("GET", "/members")["members"]}
        return MemberDirectory(self.identity.ca_pem, None, members.get)


class QueryResult(dict):  # type: ignore[type-arg]
    """The answer to one federated question (the ``--json`` object), plus DataFrames."""

    def frame(self) -> Any:
        """Per-site rows and the pooled rows as one pandas DataFrame (column ``site``,
        ``"(pooled)"`` for the pooled rows; sites without rows appear with their status)."""
        import pandas as pd

        records: list[dict[str, Any]] = []
        for site in self["sites"]:
            base = {"site": site["site"], "status": site["status"]}
            records += [{**base, **row} for row in site["rows"]] or [
                {**base, "reason": site["reason"]}]
        records += [{"site": "(pooled)", "status": "ok", **row}
                    for row in self["pooled"]["rows"]]
        frame = pd.DataFrame.from_records(records)
        frame.attrs["epsilon_spent"] = self["epsilon_spent"]
        frame.attrs["sites_covered"] = self["pooled"]["sites_covered"]
        return frame


class Network:
    """A researcher's or analyst's view of the network (see the module docstring)."""

    def __init__(self, client: HubClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def agreements(self) -> list[dict[str, Any]]:
        return list(self.client.request("GET", "/agreements")["agreements"])

    def catalogue(self) -> list[dict[str, Any]]:
        """What each node holds: its tables and columns, agreements and approximate size."""
        return list(self.client.request("GET", "/catalogue")["datasets"])

    def submit(self, algorithm: str, params: dict[str, Any], *, agreement: str,
               purpose: str, sites: list[str] | None = None) -> str:
        """Sign and submit a task; return its id."""
        terms = self.client.request("GET", f"/agreements/{agreement}")
        task: dict[str, Any] = {
            "id": uuid.uuid4().hex, "agreement": agreement, "requester": self.client.identity.org,
            "purpose": purpose, "algorithm": algorithm, "params": params,
            "created": time.time(), "deadline": time.time() + terms["deadline_seconds"],
        }
        if sites:
            task["sites"] = [s if s.startswith("Organization/") else f"Organization/{s}"
                             for s in sites]
        self.client.request("POST", "/tasks", {"token": self.client.identity.sign(task)})
        return str(task["id"])

    def result(self, task_id: str, *, wait: float = 60) -> QueryResult:
        """Wait (at most ``wait`` seconds, and never past the deadline) for the answers."""
        until = time.monotonic() + wait
        while True:
            left = max(0.0, until - time.monotonic())
            status = self.client.request("GET", f"/tasks/{task_id}?wait={min(left, 30):.1f}",
                                         timeout=min(left, 30) + 10)
            if status["done"] or left <= 0:
                return _shape(status, self.client)

    def run(self, algorithm: str, params: dict[str, Any], *, agreement: str, purpose: str,
            sites: list[str] | None = None, wait: float = 60) -> QueryResult:
        return self.result(self.submit(algorithm, params, agreement=agreement, purpose=purpose,
                                       sites=sites), wait=wait)

    def count(self, cohort: dict[str, Any], *, by: list[str] | None = None,
              agreement: str, purpose: str, **extra: Any) -> Any:
        """Count a cohort across the network; a pandas DataFrame (see QueryResult.frame)."""
        params = {"cohort": cohort, "strata": list(by or []), **extra}
        return self.run("count", params, agreement=agreement, purpose=purpose).frame()

    def summary(self, cohort: dict[str, Any], observation: dict[str, Any], *,
                value_range: tuple[float, float], by: list[str] | None = None,
                agreement: str, purpose: str, **params: Any) -> Any:
        """n, mean, variance and quantiles of an observation's values per stratum."""
        body = {"cohort": cohort, "observation": observation, "range": list(value_range),
                "strata": list(by or []), **params}
        return self.run("summary", body, agreement=agreement, purpose=purpose).frame()

    def indicator(self, name: str, *, period: str | dict[str, str], agreement: str,
                  purpose: str = "PUBHLTH", **params: Any) -> Any:
        """A named public-health indicator per site and period."""
        return self.run("indicator", {"indicator": name, "period": period, **params},
                        agreement=agreement, purpose=purpose).frame()


def _shape(status: dict[str, Any], client: HubClient) -> QueryResult:
    """The hub's answer as the documented JSON object; node signatures re-checked here,
    so a hub cannot alter a node's released numbers unnoticed."""
    directory = client.directory()
    sites = []
    for target in status["sites"]:
        result = target["result"] or {}
        if target["status"] == "ok":
            directory.check_result_signature(target["site"], status["task"]["id"], result,
                                             target["signature"])
        sites.append({"site": target["site"], "status": target["status"],
                      "reason": target["reason"] or "", "rows": result.get("rows", []),
                      "epsilon_spent": result.get("epsilon_spent", 0.0),
                      "notes": result.get("notes", [])})
    pooled = status["pooled"] or {"sites_covered": [], "rows": []}
    return QueryResult(
        task=status["task"]["id"], done=status["done"], sites=sites,
        pooled={"sites_covered": pooled["sites_covered"], "rows": pooled["rows"]},
        epsilon_spent=float(pooled.get("epsilon_spent", 0.0)),
    )


def connect(hub_url: str | None = None, credentials: str | Path | None = None, *,
            transport: httpx.BaseTransport | None = None) -> Network:
    """Connect to a hub as the member whose credentials file is given.

    ``credentials`` may also be a folder made by ``healthmesh network up`` (its
    analyst's credentials are used)."""
    if credentials is None:
        raise HealthmeshError("connect() needs a credentials file")
    path = Path(credentials)
    if path.is_dir():
        path = path / "analyst" / "credentials.json"
    identity = Identity.load(path)
    return Network(HubClient(identity, base_url=hub_url or identity.hub_url, transport=transport))
