"""The hub's public-health dashboard (``/web/dashboard``).

The dashboard is a member client of its own network: it submits the federated
``indicator`` task under the ``public-health`` agreement with member credentials
(``HUB/dashboard.json`` names them: ``{"credentials": "...", "agreement": ...}``; a hub
made by ``healthmesh network up`` uses the network's analyst, ``../analyst``). Each node
checks the task against its own copy of the agreement and its patients' consents and
applies the disclosure rules; the hub only pools what the nodes released.

Results are stored in ``HUB/dashboard.sqlite``, one row per run, and every view shows the
newest run of its (indicator, period, strata). **Refresh** re-runs a view (the nodes
enforce the budget and repeat limits of the agreement); it is accepted from the hub's
own machine only, and at most once per ``min_refresh_seconds`` per view.
``healthmesh dashboard refresh`` runs the same for scheduled (e.g. monthly) updates.

Every view has a URL of its own (the query string), CSV/SVG/PNG downloads, and a "how
this number was computed" panel. Pages are public: they show only released aggregates.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Response

from healthmesh.web import charts
from healthmesh.web.errors import PageError
from healthmesh.web.measures import Measure, measures, task_params
from healthmesh.web.render import html_page, redirect
from healthmesh.web.routing import PageRoute
from healthmesh.web.session import read_form

__all__ = ["Dashboard", "View", "router"]

router = APIRouter(prefix="/web", route_class=PageRoute, include_in_schema=False)
STRATA = ("sex", "age_band", "state")
_PERIOD = re.compile(r"^(20[0-9]{2})(-(0[1-9]|1[0-2]))?$")
_REGION = re.compile(r"^[A-Za-z][A-Za-z .'-]{0,63}$")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class View:
    """One dashboard view: what its URL's query string names."""

    indicator: str
    period: str
    stratum: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, query: Any) -> View:
        """The view of a query string (defaults filled in; raises PageError)."""
        known = measures()
        name = query.get("indicator") or next(iter(known))
        if name not in known:
            raise PageError(f"Unknown indicator '{str(name)[:40]}'.", 400)
        period = query.get("period") or str(datetime.now(UTC).year)
        if not _PERIOD.match(period):
            raise PageError("period must be a year (2025) or a month (2025-03).", 400)
        stratum = query.get("stratum") or None
        if stratum is not None and stratum not in STRATA:
            raise PageError(f"stratum must be one of {', '.join(STRATA)}.", 400)
        region = (query.get("region") or "").strip() or None
        if region is not None and not _REGION.match(region):
            raise PageError("region must be the name of a region (letters and spaces).", 400)
        return cls(name, period, stratum, region)

    @property
    def strata(self) -> list[str]:
        """The strata the task asks for (a region needs the state stratum)."""
        out = ["state"] if self.region or self.stratum == "state" else []
        return out + ([self.stratum] if self.stratum and self.stratum != "state" else [])

    @property
    def measure(self) -> Measure:
        return measures()[self.indicator]

    def params(self) -> dict[str, Any]:
        return task_params(self.measure, self.period, self.strata)

    def key(self) -> str:
        return orjson.dumps(self.params(), option=orjson.OPT_SORT_KEYS).decode()

    def query(self, **change: Any) -> str:
        values = {"indicator": self.indicator, "period": self.period,
                  "stratum": self.stratum or "", "region": self.region or "", **change}
        return urlencode({k: v for k, v in values.items() if v})


class Dashboard:
    """The dashboard's settings and stored runs for one hub folder."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.configure(config)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "dashboard.sqlite", check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, created REAL, "
                         "result TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS runs_key ON runs (key, created)")

    def configure(self, config: dict[str, Any]) -> None:
        self.credentials = Path(config["credentials"]) if config.get("credentials") else None
        self.agreement = str(config.get("agreement", "public-health"))
        self.purpose = str(config.get("purpose", "PUBHLTH"))
        self.min_refresh = float(config.get("min_refresh_seconds", 60))
        self.wait = float(config.get("wait_seconds", 60))

    def reload(self) -> None:
        """Read ``dashboard.json`` again (a refresh uses the settings of the moment)."""
        self.configure(read_config(self.folder))

    @classmethod
    def open(cls, folder: Path) -> Dashboard:
        """The dashboard of a hub folder (``dashboard.json``, else ``../analyst``)."""
        return cls(folder, read_config(folder))

    def close(self) -> None:
        self._db.close()

    def latest(self, view: View) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT created, result FROM runs WHERE key = ? "
                                   "ORDER BY created DESC LIMIT 1", (view.key(),)).fetchone()
        if row is None:
            return None
        return {"created": row[0], **orjson.loads(row[1])}

    def store(self, view: View, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?)",
                             (view.key(), time.time(), orjson.dumps(result).decode()))

    def run(self, view: View) -> dict[str, Any]:
        """Submit the view's indicator task to the network, wait, store the result."""
        if self.credentials is None:
            raise PageError("The dashboard has no member credentials: write "
                            "dashboard.json in the hub folder (see docs/web.md).", 503)
        from healthmesh.network.client import connect

        with connect(credentials=self.credentials) as network:
            result = network.run(view.measure.algorithm, view.params(), agreement=self.agreement,
                                 purpose=self.purpose, wait=self.wait)
            terms = network.client.request("GET", f"/agreements/{self.agreement}")
        stored = {"sites": result["sites"], "pooled": result["pooled"],
                  "epsilon_spent": result["epsilon_spent"], "task": result["task"],
                  "disclosure": terms.get("disclosure", {}), "params": view.params()}
        self.store(view, stored)
        return stored


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/dashboard.json`` (credentials relative to the folder), or the network's
    analyst credentials beside a hub made by ``network up``, or nothing."""
    path = folder / "dashboard.json"
    if not path.exists():
        sibling = folder.parent / "analyst" / "credentials.json"
        return {"credentials": str(sibling)} if sibling.exists() else {}
    try:
        config = orjson.loads(path.read_bytes()[:65536])
    except orjson.JSONDecodeError as exc:
        raise PageError(f"{path}: {exc}", 500) from None
    if not isinstance(config, dict):
        raise PageError(f"{path}: must be a JSON object", 500)
    if config.get("credentials"):
        config["credentials"] = str((folder / str(config["credentials"])).resolve())
    return config


def _dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def _site_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The released rows of every site (the pooled rows carry the site already)."""
    return [row if "site" in row else {"site": target["site"], **row}
            for target in run["sites"] for row in target["rows"]]


def _network_rows(run: dict[str, Any], view: View) -> list[dict[str, Any]]:
    return charts.network_rows(_in_region(_site_rows(run), view), view.strata)


def _in_region(rows: list[dict[str, Any]], view: View) -> list[dict[str, Any]]:
    return rows if view.region is None else [r for r in rows if r.get("state") == view.region]


@router.get("/")
def hub_home(request: Request) -> Response:
    return redirect(request, "/web/dashboard")


@router.get("/dashboard")
def dashboard(request: Request) -> Response:
    view = View.parse(request.query_params)
    board = _dashboard(request)
    run = board.latest(view)
    context: dict[str, Any] = {
        "view": view, "run": run, "indicators": measures(), "strata_choices": STRATA,
        "definition": view.measure, "cohort_json": orjson.dumps(
            view.measure.definition, option=orjson.OPT_INDENT_2).decode(),
        "configured": board.credentials is not None, "agreement": board.agreement}
    if run is not None:
        strata = view.strata
        context.update(
            pooled=charts.table_rows(_network_rows(run, view), strata),
            sites=charts.table_rows(_in_region(_site_rows(run), view), strata),
            strata=strata, created=datetime.fromtimestamp(run["created"], UTC)
            .strftime("%Y-%m-%d %H:%M UTC"),
            covered=run["pooled"]["sites_covered"],
            missing=[s for s in run["sites"] if s["status"] != "ok"])
    return html_page(request, "dashboard/index.html", **context)


def _chart_spec(view: View, run: dict[str, Any], kind: str) -> dict[str, Any]:
    title, unit = view.measure.title, view.measure.unit
    pooled = _network_rows(run, view)
    stratum = view.stratum if view.stratum else None
    if kind == "time":
        return charts.line_spec(f"{title}, {view.period}", pooled, stratum, unit)
    rows = pooled if stratum else _in_region(_site_rows(run), view)
    latest = charts.latest_period(rows)
    rows = [r for r in rows if str(r.get("period")) == latest]
    return charts.bar_spec(f"{title}, {latest or view.period}", rows, stratum or "site",
                           unit)


@router.get("/dashboard/chart-{kind}.{fmt}")
def chart(request: Request, kind: str, fmt: str) -> Response:
    if kind not in ("time", "bar") or fmt not in ("svg", "png"):
        raise PageError("Charts are chart-time or chart-bar, as .svg or .png.", 404)
    view = View.parse(request.query_params)
    run = _dashboard(request).latest(view)
    if run is None:
        raise PageError("This view has not been computed yet.", 404)
    body = charts.render(_chart_spec(view, run, kind), fmt)
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    headers = {"Cache-Control": "no-cache"}
    if request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{view.indicator}-' \
                                         f'{view.period}-{kind}.{fmt}"'
    return Response(body, media_type=media, headers=headers)


@router.get("/dashboard/data.csv")
def data_csv(request: Request) -> Response:
    view = View.parse(request.query_params)
    run = _dashboard(request).latest(view)
    if run is None:
        raise PageError("This view has not been computed yet.", 404)
    body = charts.csv_bytes(_network_rows(run, view),
                            _in_region(_site_rows(run), view), view.strata)
    name = f"{view.indicator}-{view.period}{'-' + view.stratum if view.stratum else ''}.csv"
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/dashboard/refresh")
async def refresh(request: Request) -> Response:
    form = await read_form(request)
    host = request.client.host if request.client else ""
    if host not in LOOPBACK:
        raise PageError("Refresh is accepted from the hub's own machine only.", 403)
    view = View.parse({k: v[0] for k, v in form.items() if v})
    board = _dashboard(request)
    board.reload()
    last = board.latest(view)
    if last is not None and time.time() - last["created"] < board.min_refresh:
        raise PageError(f"This view was computed less than {board.min_refresh:.0f} s ago.",
                        429)
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(board.run, view)
    return redirect(request, f"/web/dashboard?{view.query()}")
