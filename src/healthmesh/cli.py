"""The ``healthmesh`` command.

Commands are thin: they parse flags, call the core, print the answer (a table
or, with ``--json``, one JSON object) and exit with a stable code from
:class:`ExitCode` (each documented in docs/reference/cli.md, checked by a test).
"""

from __future__ import annotations

import sys
from datetime import date
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from healthmesh import __version__
from healthmesh.errors import ConfigError, FhirError, HealthmeshError, InputError

__all__ = ["ExitCode", "app", "main"]


class ExitCode(IntEnum):
    """Exit codes of every healthmesh command (stable; documented)."""

    OK = 0
    REJECTED = 1  # the command ran but some input was rejected (see the rejects file)
    USAGE = 2  # bad command line (unknown flag, missing argument)
    CONFIG = 3  # bad node folder or settings
    INPUT = 4  # unreadable input file
    TAMPERED = 5  # the audit log failed verification (see the reported position)
    UNAVAILABLE = 6  # the hub (or another service the command needs) cannot be reached
    INTERRUPTED = 130  # stopped by Ctrl-C; committed batches are kept, rerun to complete
    INTERNAL = 70  # unexpected error (a bug): please report it


app = typer.Typer(
    name="healthmesh",
    help="healthmesh: a node of a health data network (FHIR R4 store, API, ingest).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
node_app = typer.Typer(help="Create and inspect node folders.", no_args_is_help=True)
app.add_typer(node_app, name="node")
audit_app = typer.Typer(help="Verify and export the node's audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
patient_app = typer.Typer(help="Patient access to their own data.", no_args_is_help=True)
app.add_typer(patient_app, name="patient")
views_app = typer.Typer(help="SQL on FHIR v2 views: FHIR resources as tables.",
                        no_args_is_help=True)
app.add_typer(views_app, name="views")

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]


def _fail(message: str, code: ExitCode) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(int(code))


def _emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def version() -> None:
    """Print the healthmesh version."""
    out.print(__version__)


@node_app.command("init")
def node_init(
    folder: Annotated[Path, typer.Argument(help="Node folder to create.")],
    name: Annotated[str | None, typer.Option(help="Name of the organisation/node.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a node folder with an empty store."""
    from healthmesh.node import init_node

    try:
        init_node(folder, name=name)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"folder": str(folder), "created": True})
    else:
        out.print(f"node folder ready: {folder}")


@node_app.command("status")
def node_status(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    json_out: JsonFlag = False,
) -> None:
    """Show the resources stored in a node, per type."""
    from healthmesh.node import open_node

    try:
        with open_node(folder) as node:
            counts = node.store.counts()
            name = node.settings.name
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"name": name, "resources": counts, "total": sum(counts.values())})
        return
    table = Table(title=f"{name} — {sum(counts.values())} resources")
    table.add_column("type")
    table.add_column("count", justify="right")
    for rtype, count in sorted(counts.items()):
        table.add_row(rtype, str(count))
    out.print(table)


@audit_app.command("verify")
def audit_verify(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    json_out: JsonFlag = False,
) -> None:
    """Check the audit log's hash chain and signed checkpoints; report the first bad entry."""
    from healthmesh.audit import AuditError, verify_folder

    if not (folder / "audit.sqlite").exists():
        _fail(f"{folder} has no audit log (audit.sqlite)", ExitCode.CONFIG)
    try:
        result = verify_folder(folder)
    except AuditError as exc:
        _fail(str(exc), ExitCode.TAMPERED)
    data = {"ok": result.ok, "checked": result.checked, "first_bad": result.first_bad,
            "reason": result.reason}
    if json_out:
        _emit_json(data)
    elif result.ok:
        out.print(f"audit log intact: {result.checked} entries verified")
    else:
        console.print(f"[red]audit log tampered:[/red] first bad entry {result.first_bad}: "
                      f"{result.reason}", highlight=False)
    if not result.ok:
        raise typer.Exit(int(ExitCode.TAMPERED))


@audit_app.command("export")
def audit_export(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="NDJSON file (default stdout).")]
    = None,
    since: Annotated[str | None, typer.Option(help="Only entries from this date/time on.")] = None,
) -> None:
    """Export the audit log as FHIR AuditEvent NDJSON (for SIEM tools)."""
    from healthmesh.audit import export_folder
    from healthmesh.fhir.search_params import date_range

    if not (folder / "audit.sqlite").exists():
        _fail(f"{folder} has no audit log (audit.sqlite)", ExitCode.CONFIG)
    try:
        since_us = date_range(since)[0] if since else None
    except ValueError as exc:
        _fail(f"invalid --since: {exc}", ExitCode.USAGE)
    count = export_folder(folder, out_file, since_us)
    if out_file is not None:
        out.print(f"wrote {count} AuditEvents to {out_file}")


@patient_app.command("token")
def patient_token(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    patient_id: Annotated[str, typer.Argument(help="The patient's id at this node.")],
    ttl: Annotated[str, typer.Option(help="Lifetime: 300s, 30m, 12h (at most 24h).")] = "12h",
    json_out: JsonFlag = False,
) -> None:
    """Issue an access token for a patient (shown once; give it to the patient).

    For a patient without an app: the token acts as the patient on the /patient API and
    reads their own data only. Patients with an account sign in at /auth/authorize."""
    from healthmesh.cli_auth import parse_ttl
    from healthmesh.node import open_node

    try:
        seconds = parse_ttl(ttl)
        with open_node(folder) as node:
            if node.fhir.store.read("Patient", patient_id) is None:
                _fail(f"no Patient/{patient_id} at this node", ExitCode.INPUT)
            token = issue_patient_token(node, patient_id, seconds)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"patient": patient_id, "token": token, "expires_in": seconds})
    else:
        out.print(token, soft_wrap=True)


def issue_patient_token(node: Any, patient_id: str, ttl: int) -> str:
    """An access token for a patient acting for themself (scopes of the patient role)."""
    from healthmesh.auth import ROLES, Client, User, parse_scopes

    scopes, purpose = ROLES["patient"]
    client = Client("healthmesh-cli", "healthmesh command line", None, scopes, (purpose,),
                    None, ())
    user = User(f"patient-{patient_id}", "patient", None, patient_id, False)
    issued = node.auth.server.mint(client, parse_scopes(scopes), purpose, user=user, ttl=ttl,
                                   via="cli")
    return str(issued.access_token)


@views_app.command("run")
def views_run(
    view_file: Annotated[Path, typer.Argument(help="ViewDefinition JSON file.")],
    sources: Annotated[list[Path], typer.Argument(help="NDJSON files/folders, or a node folder.")],
    fmt: Annotated[str, typer.Option("--format", help="csv, json (JSON lines) or parquet "
                                                      "(needs --out).")] = "csv",
    out_file: Annotated[Path | None, typer.Option("--out", help="Output file (default stdout).")]
    = None,
    requester: Annotated[str, typer.Option(help="Who asks (node folders).")] = "system",
    purpose: Annotated[str | None, typer.Option(help="Purpose of use (node folders).")] = None,
) -> None:
    """Flatten resources into rows with a ViewDefinition (from files, or a node's store
    through its consent gate)."""
    from healthmesh.views import ViewError, compile_view
    from healthmesh.views.run import FORMATS, file_resources

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}", ExitCode.USAGE)
    if fmt == "parquet" and out_file is None:
        _fail("--format parquet needs --out FILE", ExitCode.USAGE)
    try:
        view = compile_view(orjson.loads(view_file.read_bytes()))
    except (OSError, orjson.JSONDecodeError) as exc:
        _fail(f"{view_file}: cannot read the ViewDefinition: {exc}", ExitCode.INPUT)
    except ViewError as exc:
        _fail(f"{view_file}: {exc}", ExitCode.INPUT)
    handle = out_file.open("w", newline="") if out_file and fmt != "parquet" else sys.stdout
    try:
        if len(sources) == 1 and (sources[0] / "node.toml").exists():
            count = _view_over_node(view, sources[0], requester, purpose, handle, fmt, out_file)
        else:
            count = _write_view(view, file_resources(sources), handle, fmt, out_file)
    except (InputError, ViewError) as exc:
        _fail(str(exc), ExitCode.INPUT)
    except FhirError as exc:  # e.g. no --purpose for a node's data
        _fail(f"{exc} (give --requester and --purpose)", ExitCode.USAGE)
    finally:
        if out_file and fmt != "parquet":
            handle.close()
    console.print(f"{count} rows", highlight=False)


def _write_view(view: Any, resources: Any, handle: Any, fmt: str, out_file: Path | None) -> int:
    from healthmesh.views.run import write_parquet, write_rows

    if fmt == "parquet" and out_file is not None:
        return write_parquet(view, resources, out_file)
    return write_rows(view, resources, handle, fmt)


def _view_over_node(view: Any, folder: Path, requester: str, purpose: str | None,
                    handle: Any, fmt: str, out_file: Path | None) -> int:
    from healthmesh.gate.requester import Requester
    from healthmesh.node import open_node

    with open_node(folder) as node:
        repo = node.gate.for_request(Requester(requester, purpose))
        query = repo.parse(view.resource, [], strict=True)
        resources = (s.resource() for s in repo.stream(query, action="view"))
        return _write_view(view, resources, handle, fmt, out_file)


@views_app.command("refresh")
def views_refresh(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    full: Annotated[bool, typer.Option("--full", help="Rebuild every table.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Bring the node's DuckDB analytic tables up to date (incremental by default)."""
    from healthmesh.views.tables import AnalyticsBusy, AnalyticsError

    try:
        with _analytic_tables(folder) as opened:
            stats = opened.tables.refresh(full=full)
    except AnalyticsBusy as exc:
        _fail(str(exc), ExitCode.UNAVAILABLE)
    except AnalyticsError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"tables": stats.tables, "resources_seen": stats.resources_seen,
                    "seconds": round(stats.seconds, 3), "full": stats.full,
                    "warnings": stats.warnings})
        return
    for name, rows in sorted(stats.tables.items()):
        out.print(f"{name:<22}{rows:>10} rows")
    out.print(f"{stats.resources_seen} resources read in {stats.seconds:.2f} s")
    for warning in stats.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


class _analytic_tables:  # noqa: N801  (used as a context manager, like open())
    """The node's analytic tables, with the node closed afterwards."""

    def __init__(self, folder: Path) -> None:
        from healthmesh.node import open_node
        from healthmesh.views.tables import AnalyticTables

        try:
            self.node = open_node(folder)
        except ConfigError as exc:
            _fail(str(exc), ExitCode.CONFIG)
        self.tables = AnalyticTables(folder, self.node.store)

    def __enter__(self) -> _analytic_tables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.node.close()


@app.command()
def sql(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    query: Annotated[str, typer.Argument(help="One SQL statement (DuckDB dialect).")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    limit: Annotated[int, typer.Option(help="Print at most this many rows.", min=1)] = 1000,
) -> None:
    """Query the node's analytic tables read-only, as its administrator (audited).

    Row-level output for the node's own staff at the node; nothing leaves the node this
    way (data for others goes through the egress gate)."""
    import csv

    from healthmesh.audit import AuditRecord
    from healthmesh.views.tables import AnalyticsBusy, AnalyticsError

    if fmt not in ("table", "csv", "json"):
        _fail("--format must be table, csv or json", ExitCode.USAGE)
    with _analytic_tables(folder) as opened:
        opened.node.audit.append(AuditRecord(
            actor="system", action="sql", decision="permit", reason="node administrator query",
            detail={"sql": query[:2000]}))
        try:
            columns, rows = opened.tables.query(query)
        except AnalyticsBusy as exc:
            _fail(str(exc), ExitCode.UNAVAILABLE)
        except AnalyticsError as exc:  # a bad query (or a write) is the user's input
            _fail(str(exc).splitlines()[0], ExitCode.INPUT)
    rows = rows[:limit]
    if fmt == "json":
        for row in rows:
            sys.stdout.write(orjson.dumps(dict(zip(columns, row, strict=True)),
                                          default=str).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table()
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@app.command()
def ingest(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    paths: Annotated[list[Path], typer.Argument(
        help="NDJSON/Bundle/.hl7 files or folders (with --mapping: CSV/Parquet files or "
        "folders).")],
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects file (default: FOLDER/rejects/ingest-TIME.ndjson)")
    ] = None,
    mapping: Annotated[str | None, typer.Option(
        help="Map CSV/Parquet files with this YAML mapping file, or a shipped mapping "
             "(claims, wearables, sdoh).")] = None,
    json_out: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Load FHIR NDJSON, Bundles (Synthea's included), HL7 v2 .hl7 files, or flat files with
    --mapping."""
    from healthmesh.ingest.loader import ingest as run_ingest
    from healthmesh.ingest.readers import input_files
    from healthmesh.node import open_node

    rejects_path = rejects or folder / "rejects" / f"ingest-{_stamp()}.ndjson"
    if mapping is not None:
        from healthmesh.cli_terminology import ingest_with_mapping

        ingest_with_mapping(folder, mapping, paths, rejects_path, json_out, quiet)
        return
    try:
        node = open_node(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    try:
        total = sum(p.stat().st_size for p, _ in input_files(paths))
        with _progress(quiet or json_out) as progress:
            task = progress.add_task("ingest", total=total)
            stats = run_ingest(
                node, paths, rejects_path=rejects_path,
                progress=lambda n: progress.advance(task, n),
            )
    except InputError as exc:
        _fail(str(exc), ExitCode.INPUT)
    except KeyboardInterrupt:
        _fail("interrupted; committed batches are kept — rerun the same command to complete",
              ExitCode.INTERRUPTED)
    finally:
        node.close()
    _report_ingest(stats, json_out)
    if stats.rejected:
        raise typer.Exit(int(ExitCode.REJECTED))


def _stamp() -> str:
    from datetime import datetime

    return datetime.now().strftime("%Y%m%dT%H%M%S")


def _progress(disabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=console, disable=disabled, transient=True,
    )


def _report_ingest(stats: Any, json_out: bool) -> None:
    data = {
        "files": stats.files, "read": stats.read, "created": stats.created,
        "updated": stats.updated, "unchanged": stats.unchanged, "rejected": stats.rejected,
        "rejects_file": stats.rejects_file,
    }
    if json_out:
        _emit_json(data)
        return
    out.print(
        f"files {stats.files}  read {stats.read}  created {stats.created}  "
        f"updated {stats.updated}  unchanged {stats.unchanged}  rejected {stats.rejected}"
    )
    if stats.rejects_file:
        console.print(f"[yellow]rejected resources and reasons:[/yellow] {stats.rejects_file}")


@app.command()
def serve(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    insecure_dev: Annotated[bool, typer.Option(
        "--insecure-dev", help="Development only: also accept unauthenticated X-Requester "
        "headers (a warning is printed on every request).")] = False,
) -> None:
    """Serve the node's FHIR R4 API at http://HOST:PORT/fhir (access tokens required)."""
    import uvicorn

    from healthmesh.api.app import create_app
    from healthmesh.node import open_node

    try:
        node = open_node(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    tls = {}
    if node.settings.tls_certificate and node.settings.tls_private_key:
        from healthmesh.security.keys import configured_passphrase

        tls = {"ssl_certfile": str(folder / node.settings.tls_certificate),
               "ssl_keyfile": str(folder / node.settings.tls_private_key),
               "ssl_keyfile_password": configured_passphrase()}
    agent = _start_agent(node)
    scheme = "https" if tls else "http"
    out.print(f"FHIR base: {scheme}://{host}:{port}/fhir")
    out.print(f"API docs:  {scheme}://{host}:{port}/docs")
    if insecure_dev:
        console.print("[red]WARNING: --insecure-dev: requests without an access token are "
                      "served on the word of their X-Requester header. Never in production."
                      "[/red]")
    try:
        uvicorn.run(create_app(node, insecure_dev=insecure_dev), host=host, port=port,
                    log_level=log_level, **tls)  # type: ignore[arg-type]
    finally:
        if agent is not None:
            agent.stop()
        node.close()


node_app.command("serve", help="The same as 'healthmesh serve': the node's API, and its "
                 "agent when the node is in a network.")(serve)


def _start_agent(node: Any) -> Any:
    """The node agent (a thread polling the hub) when the node is in a network."""
    if not node.settings.hub_url:
        return None
    import logging

    from healthmesh.network.agent import NodeAgent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per long-poll
    try:
        agent = NodeAgent(node)
    except HealthmeshError as exc:
        node.close()
        _fail(str(exc), ExitCode.CONFIG)
    agent.start()
    out.print(f"node agent: {agent.identity.org} polling {node.settings.hub_url}")
    return agent


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")],
    patients: Annotated[int, typer.Option(help="Number of persons.", min=1)] = 1000,
    sites: Annotated[str, typer.Option(help="Comma-separated site kinds.")] = (
        "hospital,clinic,lab,insurer,pharmacy,dental,public-health"
    ),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    start: Annotated[str, typer.Option(help="First date of care (YYYY-MM-DD).")] = "2015-01-01",
    end: Annotated[str, typer.Option(help="Last date of care (YYYY-MM-DD).")] = "2025-12-31",
    fmt: Annotated[str, typer.Option("--format", help="ndjson or bundle.")] = "ndjson",
    json_out: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Generate a synthetic multi-site population (FHIR R4 NDJSON per site)."""
    from healthmesh.synth import generate

    try:
        start_d, end_d = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        _fail(f"invalid date: {exc}", ExitCode.USAGE)
    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    with Progress(console=console, disable=quiet or json_out, transient=True) as progress:
        task = progress.add_task("synth", total=patients)
        try:
            manifest = generate(
                out_dir, patients=patients, sites=site_list, seed=seed, start=start_d,
                end=end_d, fmt=fmt, progress=lambda n: progress.update(task, completed=n),
            )
        except ValueError as exc:
            _fail(str(exc), ExitCode.USAGE)
    if json_out:
        _emit_json(manifest)
    else:
        out.print(f"wrote {out_dir} ({patients} persons, sites: {', '.join(site_list)})")


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="Network folder for the demo.")] = Path(
        "demo-network"),
    patients: Annotated[int, typer.Option(help="Synthetic persons to generate.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    port: Annotated[int, typer.Option(help="Port of the hospital's FHIR API; the clinic and "
                                           "the lab take the next ones, the hub the one "
                                           "before.", min=2, max=65533)] = 8080,
) -> None:
    """A local network (hub, hospital, clinic, lab) over synthetic patients; Ctrl-C stops it."""
    import signal as signals
    import time

    from healthmesh.network.local import network_down, network_up

    try:
        state = network_up(folder, sites=["hospital", "clinic", "lab"], patients=patients,
                           seed=seed, port=port - 1,
                           say=lambda text: console.print(text, highlight=False))
    except HealthmeshError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    signals.signal(signals.SIGTERM, _interrupt)  # 'kill' stops the network as Ctrl-C does
    try:
        _demo_guide(state, folder)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the network ...")
    finally:
        network_down(folder)


def _interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt


def _demo_guide(state: dict[str, Any], folder: Path) -> None:
    from healthmesh.cli_auth import ensure_client, mint_token
    from healthmesh.node import open_node

    hospital = state["nodes"]["hospital"]["fhir"]
    with open_node(folder / "nodes" / "hospital") as node:
        first = node.store.search(node.fhir.parse("Patient", [("_count", "1")])).matches
        token = issue_patient_token(node, first[0].id, 8 * 3600) if first else None
        ensure_client(node, "clinic-ehr", "Organization/clinic", "system/*.rs",
                      ("TREAT", "ETREAT"))
        clinician = mint_token(node, "clinic-ehr", "system/*.rs", "TREAT", ttl=8 * 3600)
        password = _demo_users(node, folder, first[0].id if first else None)
    out.print(f"hub:              {state['hub']}")
    for site, info in state["nodes"].items():
        out.print(f"{site + ' FHIR API:':<18}{info['fhir']}   (docs: "
                  f"{info['fhir'].removesuffix('/fhir')}/docs)")
    ca = state.get("tls_ca", "")
    out.print(f"Every listener speaks TLS with certificates of the network's local CA ({ca}).")
    out.print("Read the hospital's FHIR API as the clinic's EHR, for treatment (an access "
              "token valid 8 hours; 'healthmesh auth token' makes more):")
    out.print(f"  curl --cacert {ca} -H 'Authorization: Bearer {clinician.access_token}' "
              f"'{hospital}/Patient?_count=5'")
    if token:
        out.print(f"A patient ({first[0].id}) sees their consents and who read their data:")
        out.print(f"  curl --cacert {ca} -H 'Authorization: Bearer {token}' "
                  f"{hospital.removesuffix('/fhir')}/patient/access-log")
    web = hospital.removesuffix("/fhir") + "/web/"
    out.print(f"Web pages (the browser must trust {ca}, or accept the warning):")
    out.print(f"  public-health dashboard: {state['hub']}/web/dashboard?indicator="
              "hypertension-control&period=2024  (press 'Refresh from the nodes')")
    if first:
        out.print(f"  patient portal:  {web}  user 'patient' ({first[0].id}), "
                  f"password {password}")
    out.print(f"  steward console: {web}  user 'steward', password {password}")
    out.print(f"  (demo accounts of this run; also in {folder / DEMO_USERS_FILE})")
    out.print("Ask the whole network (only aggregates leave the nodes):")
    out.print(f"  healthmesh query indicator hypertension-control --network {folder} "
              "--period 2024")
    out.print(f"  healthmesh query count --network {folder} --by sex,age_band")
    out.print("Press Ctrl-C to stop the network.")


DEMO_USERS_FILE = "demo-users.txt"


def _demo_users(node: Any, folder: Path, patient: str | None) -> str:
    """Sign-in accounts for the demo's web pages at the hospital: a patient and a data
    steward, with one random password per demo folder (kept in a 0600 file beside it,
    so a restarted demo keeps it). Never a fixed default password."""
    import os
    import secrets

    path = folder / DEMO_USERS_FILE
    if path.exists():
        password = path.read_text("utf-8").split("password: ", 1)[-1].split()[0]
    else:
        password = "demo-" + secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("Demo sign-in accounts of the hospital (users 'patient' and "
                         f"'steward')\npassword: {password}\n")
    store = node.auth.store
    if patient is not None:
        store.add_user("patient", password, "patient", patient=patient)
    store.add_user("steward", password, "steward", org=node.settings.organization or None)
    return password


import healthmesh.cli_anonymize  # noqa: E402,F401  (registers the anonymize command)
import healthmesh.cli_auth  # noqa: E402,F401
import healthmesh.cli_deid  # noqa: E402,F401  (registers the de-identification commands)
import healthmesh.cli_hl7  # noqa: E402,F401  (registers the mllp commands)
import healthmesh.cli_linkage  # noqa: E402,F401  (registers the linkage commands)
import healthmesh.cli_membership  # noqa: E402,F401
import healthmesh.cli_network  # noqa: E402,F401  (registers the network commands)
import healthmesh.cli_terminology  # noqa: E402,F401  (registers the terminology commands)
import healthmesh.cli_web  # noqa: E402,F401  (registers the dashboard commands)


def main() -> None:
    """Entry point: run the CLI, mapping unexpected errors to exit codes."""
    try:
        app()
    except HealthmeshError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(int(ExitCode.CONFIG if isinstance(exc, ConfigError) else ExitCode.INPUT))
