"""``healthmesh`` commands of the network: hub, local networks, questions, releases.

Registered on the main app by :mod:`healthmesh.cli` (kept apart so each file stays
one responsibility: the node's commands there, the network's here).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, console, out
from healthmesh.errors import ConfigError, HealthmeshError

hub_app = typer.Typer(help="The network hub: registry, agreements, task broker.",
                      no_args_is_help=True)
app.add_typer(hub_app, name="hub")
network_app = typer.Typer(help="Local networks (up/down/status) and the network authority "
                               "(init/issue/revoke/crl/credentials).",
                          no_args_is_help=True)
app.add_typer(network_app, name="network")
query_app = typer.Typer(help="Ask the whole network a question (aggregates only).",
                        no_args_is_help=True)
app.add_typer(query_app, name="query")
release_app = typer.Typer(help="A data steward's review of federated results.",
                          no_args_is_help=True)
app.add_typer(release_app, name="release")


@hub_app.command("serve")
def hub_serve(
    folder: Annotated[Path, typer.Argument(help="Hub folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8700,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate for HTTPS (default: HUBDIR/tls/server-cert.pem if present).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(
        help="Its private key (default: HUBDIR/tls/server-key.pem).")] = None,
) -> None:
    """Serve the hub at https://HOST:PORT (members, agreements, tasks); plain HTTP only
    when no certificate is given or found."""
    import uvicorn

    from healthmesh.api.hub_app import create_hub_app
    from healthmesh.network.hub import HubError, open_hub

    try:
        hub = open_hub(folder)
    except (HubError, ConfigError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    cert = tls_cert or (folder / "tls" / "server-cert.pem")
    key = tls_key or (folder / "tls" / "server-key.pem")
    from healthmesh.security.keys import configured_passphrase

    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key),
           "ssl_keyfile_password": configured_passphrase()} \
        if cert.exists() and key.exists() else {}
    if (tls_cert or tls_key) and not tls:
        hub.close()
        _fail(f"TLS certificate or key not found: {cert}, {key}", ExitCode.CONFIG)
    out.print(f"hub: {'https' if tls else 'http'}://{host}:{port}")
    try:
        uvicorn.run(create_hub_app(hub), host=host, port=port, log_level=log_level,
                    **tls)  # type: ignore[arg-type]
    finally:
        hub.close()


@network_app.command("up")
def network_up(
    folder: Annotated[Path, typer.Argument(help="Network folder (created if missing).")],
    sites: Annotated[str, typer.Option(help="Comma-separated site kinds.")] = "hospital,clinic,lab",
    patients: Annotated[int, typer.Option(help="Synthetic persons to generate.", min=1)] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic data.")] = 7,
    data: Annotated[Path | None, typer.Option(help="Existing 'healthmesh synth' output.")]
    = None,
    port: Annotated[int, typer.Option(help="Hub port; nodes take the next ones (0: any free).",
                                      min=0, max=65535)] = 8700,
    json_out: JsonFlag = False,
) -> None:
    """Start a hub and one node per site on 127.0.0.1 over synthetic data."""
    from healthmesh.network.local import network_up as up

    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    if data is not None and not (data / "manifest.json").exists():
        _fail(f"{data} is not 'healthmesh synth' output (no manifest.json)", ExitCode.INPUT)
    try:
        state = up(folder, sites=site_list, patients=patients, seed=seed, data=data, port=port,
                   say=lambda text: console.print(text, highlight=False))
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json(state)
        return
    _print_network(state, folder)


def _print_network(state: dict[str, Any], folder: Path) -> None:
    out.print(f"hub:         {state['hub']}")
    for site, node in state["nodes"].items():
        out.print(f"node {site + ':':<12}{node['fhir']}  ({node['org']})")
    out.print(f"credentials: {state['credentials']}")
    out.print("ask a question:")
    out.print(f"  healthmesh query indicator hypertension-control --network {folder} "
              "--period 2024 --by site")
    out.print(f"stop:        healthmesh network down {folder}")


@network_app.command("down")
def network_down(folder: Annotated[Path, typer.Argument(help="Network folder.")]) -> None:
    """Stop every process of a network started with 'network up'."""
    from healthmesh.network.local import network_down as down

    try:
        stopped = down(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@network_app.command("status")
def network_status(folder: Annotated[Path, typer.Argument(help="Network folder.")],
                   json_out: JsonFlag = False) -> None:
    """Addresses and processes of a local network."""
    from healthmesh.network.local import network_status as status

    try:
        state = status(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json(state)
        return
    _print_network(state, folder)
    for name, alive in state["running"].items():
        out.print(f"  {name}: {'running' if alive else 'stopped'}")


# -- questions -------------------------------------------------------------------------

NetworkOpt = Annotated[Path | None, typer.Option("--network", help="Folder of 'network up'.")]
HubOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL (with --credentials).")]
CredOpt = Annotated[Path | None, typer.Option("--credentials", help="Credentials file.")]
PurposeOpt = Annotated[str, typer.Option(help="Purpose of use (HL7 v3 ActReason).")]
AgreementOpt = Annotated[str | None, typer.Option(
    help="Agreement id (default: the one agreement that allows this algorithm and purpose).")]
ByOpt = Annotated[str, typer.Option("--by", help="Comma-separated strata.")]
SitesOpt = Annotated[str | None, typer.Option("--sites", help="Only these sites.")]
WaitOpt = Annotated[float, typer.Option(help="Seconds to wait at most.", min=0)]
CohortOpt = Annotated[Path | None, typer.Option("--cohort", help="Cohort definition JSON file.")]
PeriodOpt = Annotated[str | None, typer.Option(help="Year (2024), month (2024-03) or "
                                                    "FROM..TO dates.")]


EVERYONE = {"name": "everyone", "include": []}


def _read_cohort(path: Path | None) -> dict[str, Any]:
    """The cohort in FILE, or everyone (every patient the consent scope allows)."""
    if path is None:
        return EVERYONE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        _fail(f"{path}: cannot read the cohort: {exc}", ExitCode.INPUT)
    if not isinstance(data, dict):
        _fail(f"{path}: a cohort must be a JSON object", ExitCode.INPUT)
    return data


def _period(text: str | None) -> Any:
    if text is None:
        return None
    if ".." in text:
        start, end = text.split("..", 1)
        return {"from": start, "to": end}
    return text


def _window(text: str) -> dict[str, str]:
    period = _period(text)
    if isinstance(period, dict):
        return period
    from healthmesh.algorithms import parse_period

    try:
        parsed = parse_period(period)
    except HealthmeshError as exc:
        _fail(str(exc), ExitCode.USAGE)
    return {"from": parsed.start.isoformat(), "to": parsed.end.isoformat()}


def _range(text: str) -> list[float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        _fail(f"--range must be LOW,HIGH, not {text!r}", ExitCode.USAGE)
    return [low, high]


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _ask(algorithm: str, params: dict[str, Any], *, network: Path | None, hub: str | None,
         credentials: Path | None, purpose: str, agreement: str | None, sites: str | None,
         wait: float, json_out: bool) -> None:
    from healthmesh.network.client import HubUnavailable, connect

    if network is None and credentials is None:
        _fail("give --network DIR (a folder made by 'network up') or --hub URL --credentials "
              "FILE", ExitCode.USAGE)
    params = {k: v for k, v in params.items() if v is not None}
    try:
        with connect(hub, credentials or network) as hm:
            chosen = agreement or _agreement_for(hm, algorithm, purpose)
            result = hm.run(algorithm, params, agreement=chosen, purpose=purpose,
                            sites=_split(sites) or None, wait=wait)
    except HubUnavailable as exc:
        code = ExitCode.UNAVAILABLE if exc.status is None else ExitCode.REJECTED
        _fail(str(exc), code)
    except HealthmeshError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json(dict(result))
    else:
        _print_result(result)
    if not result["pooled"]["sites_covered"]:
        raise typer.Exit(int(ExitCode.REJECTED))


def _agreement_for(hm: Any, algorithm: str, purpose: str) -> str:
    fitting = [a["id"] for a in hm.agreements()
               if algorithm in a["algorithms"] and purpose in a["purposes"]
               and hm.client.identity.org == a["requester"]]
    if len(fitting) != 1:
        _fail(f"{len(fitting)} agreements allow {algorithm} for {purpose}"
              f"{' (' + ', '.join(fitting) + ')' if fitting else ''}: give --agreement",
              ExitCode.USAGE)
    return str(fitting[0])


def _print_result(result: dict[str, Any]) -> None:
    for site in result["sites"]:
        note = f" — {site['reason']}" if site["reason"] else ""
        out.print(f"{site['site']}: {site['status']}{note}", highlight=False)
    rows = result["pooled"]["rows"]
    covered = ", ".join(result["pooled"]["sites_covered"]) or "none"
    table = Table(title=f"pooled over: {covered}")
    hidden = {"incomplete", "sites", "suppressed"}
    columns = [c for c in (rows[0] if rows else {}) if c not in hidden]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)
    if any(row.get("incomplete") for row in rows):
        out.print("<suppressed>: a small cell (or its complement) was withheld at a site; "
                  "pooled values marked incomplete leave it out")
    out.print(f"epsilon spent: {result['epsilon_spent']:g}")


def _cell(value: Any) -> str:
    if value is None:
        return "<suppressed>"
    if isinstance(value, str) and value.startswith("Organization/"):
        return value.removeprefix("Organization/")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@query_app.command("count")
def query_count(
    cohort: CohortOpt = None, by: ByOpt = "", network: NetworkOpt = None, hub: HubOpt = None,
    credentials: CredOpt = None, purpose: PurposeOpt = "HRESCH", agreement: AgreementOpt = None,
    sites: SitesOpt = None, wait: WaitOpt = 60.0, json_out: JsonFlag = False,
) -> None:
    """Count a cohort at every site, optionally stratified (--by sex,age_band)."""
    params = {"cohort": _read_cohort(cohort), "strata": _split(by)}
    _ask("count", params, network=network, hub=hub, credentials=credentials, purpose=purpose,
         agreement=agreement, sites=sites, wait=wait, json_out=json_out)


@query_app.command("summary")
def query_summary(
    code: Annotated[list[str], typer.Option("--code", help="Observation code (system|code); "
                                                          "repeatable.")] = [],  # noqa: B006
    valueset: Annotated[str | None, typer.Option(help="Observation value set name.")] = None,
    value_range: Annotated[str, typer.Option("--range", help="LOW,HIGH of the histogram that "
                                                             "carries the quantiles.")] = "0,300",
    unit: Annotated[str | None, typer.Option(help="Only values in this UCUM unit.")] = None,
    cohort: CohortOpt = None, by: ByOpt = "", network: NetworkOpt = None, hub: HubOpt = None,
    credentials: CredOpt = None, purpose: PurposeOpt = "HRESCH", agreement: AgreementOpt = None,
    sites: SitesOpt = None, period: PeriodOpt = None, wait: WaitOpt = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """n, mean, variance and quantiles of an observation's values per stratum."""
    if bool(code) == bool(valueset):
        _fail("give either --code (repeatable) or --valueset", ExitCode.USAGE)
    observation: dict[str, Any] = {"codes": code} if code else {"valueset": valueset}
    if unit:
        observation["unit"] = unit
    if period:
        observation["window"] = _window(period)
    params = {"cohort": _read_cohort(cohort), "strata": _split(by), "observation": observation,
              "range": _range(value_range)}
    _ask("summary", params, network=network, hub=hub, credentials=credentials, purpose=purpose,
         agreement=agreement, sites=sites, wait=wait, json_out=json_out)


@query_app.command("crosstab")
def query_crosstab(
    columns: Annotated[str, typer.Option("--columns", help="Two or three categorical "
                                                           "columns, comma-separated.")],
    cohort: CohortOpt = None, network: NetworkOpt = None, hub: HubOpt = None,
    credentials: CredOpt = None, purpose: PurposeOpt = "HRESCH", agreement: AgreementOpt = None,
    sites: SitesOpt = None, wait: WaitOpt = 60.0, json_out: JsonFlag = False,
) -> None:
    """Cross-tabulate two or three categorical columns over a cohort."""
    params = {"cohort": _read_cohort(cohort), "columns": _split(columns)}
    _ask("crosstab", params, network=network, hub=hub, credentials=credentials,
         purpose=purpose, agreement=agreement, sites=sites, wait=wait, json_out=json_out)


def _rate_command(kind: str) -> Any:
    def command(
        condition: Annotated[str, typer.Option(help="Value set of the condition, or "
                                                    "SYSTEM|CODE codes comma-separated.")],
        period: Annotated[str, typer.Option(help="Year (2024), month (2024-03) or FROM..TO.")],
        cohort: CohortOpt = None, by: ByOpt = "",
        interval: Annotated[str, typer.Option(help="year or month.")] = "year",
        network: NetworkOpt = None, hub: HubOpt = None, credentials: CredOpt = None,
        purpose: PurposeOpt = "HRESCH", agreement: AgreementOpt = None,
        sites: SitesOpt = None, wait: WaitOpt = 60.0, json_out: JsonFlag = False,
    ) -> None:
        event = ({"codes": _split(condition)} if "|" in condition
                 else {"valueset": condition})
        params = {"condition": event, "period": _period(period), "by": interval,
                  "strata": _split(by)}
        if cohort is not None:
            params["population"] = _read_cohort(cohort)
        _ask(kind, params, network=network, hub=hub, credentials=credentials,
             purpose=purpose, agreement=agreement, sites=sites, wait=wait, json_out=json_out)

    command.__doc__ = f"{kind.capitalize()} of a cohort's condition per 1,000 over time."
    return command


query_app.command("prevalence")(_rate_command("prevalence"))
query_app.command("incidence")(_rate_command("incidence"))


@query_app.command("indicator")
def query_indicator(
    name: Annotated[str, typer.Argument(help="Indicator, e.g. hypertension-control.")],
    period: PeriodOpt = None, by: ByOpt = "site",
    interval: Annotated[str | None, typer.Option(help="Split the period by year or month.")]
    = None, network: NetworkOpt = None,
    hub: HubOpt = None, credentials: CredOpt = None, purpose: PurposeOpt = "PUBHLTH",
    agreement: AgreementOpt = None, sites: SitesOpt = None, wait: WaitOpt = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """A named public-health indicator per site and period (numerator/denominator/rate)."""
    params = {"indicator": name, "period": _period(period) or str(date.today().year - 1),
              "strata": [b for b in _split(by) if b != "site"]}
    if interval:
        params["by"] = interval
    _ask("indicator", params, network=network, hub=hub, credentials=credentials,
         purpose=purpose, agreement=agreement, sites=sites, wait=wait, json_out=json_out)


# -- release review ----------------------------------------------------------------------

def _task_log(folder: Path) -> Any:
    from healthmesh.network.tasklog import TaskLog

    if not (folder / "node.toml").exists():
        _fail(f"{folder} is not a node folder", ExitCode.CONFIG)
    return TaskLog(folder / "network" / "tasks.sqlite")


@release_app.command("list")
def release_list(folder: Annotated[Path, typer.Argument(help="Node folder.")],
                 json_out: JsonFlag = False) -> None:
    """Results waiting for a data steward's review."""
    log = _task_log(folder)
    pending = log.pending_review()
    log.close()
    if json_out:
        _emit_json({"pending": pending})
        return
    if not pending:
        out.print("no results are waiting for review")
    for item in pending:
        out.print(f"{item['id']}  {item['algorithm']} for {item['requester']} "
                  f"({item['purpose']}, agreement {item['agreement']}): "
                  f"{len(item['result']['rows'])} rows", highlight=False)
        out.print(orjson.dumps(item["result"]["rows"][:20]).decode(), highlight=False)


def _decide(folder: Path, task_id: str, approve: bool, steward: str) -> None:
    log = _task_log(folder)
    try:
        log.decide(task_id, approve, steward)
    except HealthmeshError as exc:
        _fail(str(exc), ExitCode.USAGE)
    finally:
        log.close()
    _audit_decision(folder, task_id, approve, steward)
    out.print(f"task {task_id}: {'approved — the node agent sends it' if approve else 'withheld'}")


def _audit_decision(folder: Path, task_id: str, approve: bool, steward: str) -> None:
    from healthmesh.audit import AuditRecord
    from healthmesh.node import open_node

    with open_node(folder) as node:
        node.audit.append(AuditRecord(
            actor=steward, action="release-review", decision="permit" if approve else "deny",
            reason=f"steward {'approved' if approve else 'withheld'} task {task_id}",
            detail={"task": task_id}))


StewardOpt = Annotated[str, typer.Option(help="Who decides (a reference).")]


@release_app.command("approve")
def release_approve(folder: Annotated[Path, typer.Argument(help="Node folder.")],
                    task: Annotated[str, typer.Argument(help="Task id.")],
                    steward: StewardOpt = "Practitioner/data-steward") -> None:
    """Approve a held result (the node agent then sends it)."""
    _decide(folder, task, True, steward)


@release_app.command("reject")
def release_reject(folder: Annotated[Path, typer.Argument(help="Node folder.")],
                   task: Annotated[str, typer.Argument(help="Task id.")],
                   steward: StewardOpt = "Practitioner/data-steward") -> None:
    """Withhold a held result (the requester sees it refused by the steward)."""
    _decide(folder, task, False, steward)
