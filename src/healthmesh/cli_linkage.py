"""``healthmesh linkage ...``: privacy-preserving record linkage from the command line.

A node runs ``secret`` (once, for the whole linking group) and ``encode``; the linkage
unit runs ``match`` and hands each node its link table; stewards run ``split``, ``merge``
and ``audit``; ``evaluate`` and ``sweep`` measure quality against a synthetic truth file.
Registered on the main app by :mod:`healthmesh.cli`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, out
from healthmesh.linkage import (
    DEFAULT_THRESHOLD,
    EncodingFileError,
    LinkageError,
    LinkageSchemaError,
    LinkageState,
    LinkageStateError,
    Reject,
    SecretError,
    SiteEncodings,
    default_schema,
    encode_patients,
    link_sites,
    load_schema,
    pairwise_quality,
    read_encodings,
    read_patient_ndjson,
    read_secret,
    read_truth,
    write_encodings,
)
from healthmesh.linkage.encodings import check_site
from healthmesh.linkage.link import BLOCKING_METHODS
from healthmesh.linkage.secret import create_secret

linkage_app = typer.Typer(help="Privacy-preserving record linkage (Bloom-filter CLKs).",
                          no_args_is_help=True)
app.add_typer(linkage_app, name="linkage")

StateOption = Annotated[Path, typer.Option("--state", help="Linkage unit state folder.")]
StewardOption = Annotated[str, typer.Option("--steward", help="Id of the data steward.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]
ThresholdOption = Annotated[float, typer.Option(
    "--threshold", min=0.01, max=1.0, help="Dice threshold for a link.")]
BlockingOption = Annotated[str, typer.Option(
    "--blocking", help="keys (keyed blocking keys), lsh (from CLKs) or none (all pairs).")]


def _state_file(folder: Path) -> Path:
    return folder / "linkage.sqlite"


def _write_rejects(path: Path | None, default: Path, rejects: list[Reject]) -> Path | None:
    if not rejects:
        return None
    target = path or default
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "ab") as handle:
        for reject in rejects:
            handle.write(orjson.dumps(reject.as_dict()) + b"\n")
    return target


def _finish(data: dict[str, Any], json_out: bool, lines: list[str], rejected: Path | None) -> None:
    if rejected is not None:
        data["rejects_file"] = str(rejected)
    if json_out:
        _emit_json(data)
    else:
        for line in lines:
            out.print(line, highlight=False)
        if rejected is not None:
            out.print(f"rejected {data.get('rejected', '?')} item(s): see {rejected}")
    if rejected is not None:
        raise typer.Exit(int(ExitCode.REJECTED))


@linkage_app.command("secret")
def secret_cmd(
    path: Annotated[Path, typer.Argument(help="New secret file (32 random bytes, mode 0600).")],
    json_out: JsonFlag = False,
) -> None:
    """Create the secret the linking nodes share (never the linkage unit)."""
    try:
        create_secret(path)
    except SecretError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    _finish({"secret_file": str(path)}, json_out,
            [f"secret written to {path}; share it with the other nodes over a secure channel"],
            None)


@linkage_app.command("encode")
def encode_cmd(
    node: Annotated[Path | None, typer.Argument(help="Node folder to read Patients from.")] = None,
    ndjson: Annotated[list[Path] | None, typer.Option(
        "--ndjson", help="Patient NDJSON file(s) instead of a node.")] = None,
    secret_file: Annotated[Path, typer.Option("--secret-file", help="Shared secret file.")] = ...,
    site: Annotated[str, typer.Option("--site", help="This site's name in the linkage.")] = ...,
    out_file: Annotated[Path, typer.Option("--out", help="Encodings file to write.")] = ...,
    schema_file: Annotated[Path | None, typer.Option(
        "--schema", help="Linkage schema (clkhash v3 JSON); default: the shipped one.")] = None,
    requester: Annotated[str | None, typer.Option(
        help="Who reads the node (audited); default: the node's own organisation.")] = None,
    purpose: Annotated[str, typer.Option(help="Purpose of use for the node read.")] = "HOPERAT",
    blocking_keys: Annotated[bool, typer.Option(
        "--blocking-keys/--no-blocking-keys",
        help="Also send keyed blocking keys (they reveal block sizes; see docs/linkage.md).")]
        = True,
    rejects: Annotated[Path | None, typer.Option(help="Rejects file (NDJSON).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Encode a node's Patients into CLKs and keyed blocking keys (nothing else leaves)."""
    if (node is None) == (not ndjson):
        _fail("give either a node folder or --ndjson files", ExitCode.USAGE)
    problems: list[Reject] = []
    try:
        check_site(site)
        secret = read_secret(secret_file)
        schema = load_schema(schema_file) if schema_file else default_schema()
        if node is not None:
            encodings = _encode_node(node, schema, secret, requester, purpose, problems,
                                     blocking_keys)
        else:
            patients = (p for f in ndjson or [] for p in read_patient_ndjson(f, problems))
            encodings = encode_patients(patients, schema, secret, problems, blocking_keys)
        encodings.site = site
        write_encodings(out_file, encodings, schema)
    except (SecretError, LinkageSchemaError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    except EncodingFileError as exc:
        _fail(str(exc), ExitCode.INPUT)
    rejected = _write_rejects(rejects, out_file.with_suffix(".rejects.ndjson"), problems)
    _finish({"site": site, "encoded": len(encodings.ids), "rejected": len(problems),
             "out": str(out_file), "schema": schema.fingerprint}, json_out,
            [f"{site}: {len(encodings.ids)} Patients encoded into {out_file}"], rejected)


def _encode_node(folder: Path, schema: Any, secret: bytes, requester: str | None,
                 purpose: str, problems: list[Reject], blocking_keys: bool) -> SiteEncodings:
    from healthmesh.errors import ConfigError, FhirError
    from healthmesh.gate.requester import Requester
    from healthmesh.node import open_node

    try:
        with open_node(folder) as opened:
            actor = requester or opened.settings.organization
            if not actor:
                _fail("the node has no 'organization' setting: pass --requester",
                      ExitCode.USAGE)
            repo = opened.gate.for_request(Requester(actor, purpose))
            query = repo.parse("Patient", [], strict=True)
            patients = (s.resource() for s in repo.stream(query, action="linkage"))
            return encode_patients(patients, schema, secret, problems, blocking_keys)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    except FhirError as exc:
        _fail(f"the node refused the read: {exc}", ExitCode.CONFIG)


def _read_all(files: list[Path], problems: list[Reject],
              schema: str | None = None) -> tuple[list[SiteEncodings], str]:
    sites: dict[str, SiteEncodings] = {}
    for path in files:
        encodings, found = read_encodings(path, problems, schema)
        schema = schema or found
        if encodings.site in sites:
            raise EncodingFileError(f"two encodings files for site {encodings.site!r}")
        sites[encodings.site] = encodings
    return list(sites.values()), schema or ""


@linkage_app.command("match")
def match_cmd(
    encodings: Annotated[list[Path], typer.Argument(help="Encodings files, one per site.")],
    state: StateOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the per-site link tables.")],
    threshold: ThresholdOption = DEFAULT_THRESHOLD,
    blocking: BlockingOption = "keys",
    rejects: Annotated[Path | None, typer.Option(help="Rejects file (NDJSON).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add encodings to the linkage state, link new records, write one link table per site."""
    if blocking not in BLOCKING_METHODS:
        _fail(f"--blocking must be one of {', '.join(BLOCKING_METHODS)}", ExitCode.USAGE)
    problems: list[Reject] = []
    try:
        with LinkageState(_state_file(state)) as linkage:
            sites, schema = _read_all(encodings, problems)
            added = {s.site: linkage.add(s, schema) for s in sites}
            summary = linkage.link(threshold, blocking)
            tables = {site: _write_table(out_dir, site, linkage.link_table(site))
                      for site in linkage.sites()}
    except EncodingFileError as exc:
        _fail(str(exc), ExitCode.INPUT)
    except LinkageError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    rejected = _write_rejects(rejects, out_dir / "rejects.ndjson", problems)
    data = {**summary, "added": added, "link_tables": tables, "rejected": len(problems)}
    _finish(data, json_out, [
        f"{summary['new_records']} new record(s): {summary['joined']} joined known people, "
        f"{summary['new_people']} new people; {summary['compared']} pairs compared",
        *[f"  {site}: {path}" for site, path in tables.items()]], rejected)


def _write_table(folder: Path, site: str, rows: list[tuple[str, str]]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{site}.links.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site", "local_id", "person_id"])
        writer.writerows((site, local, person) for local, person in rows)
    return str(path)


def _read_tables(files: list[Path]) -> dict[tuple[str, str], str]:
    assigned: dict[tuple[str, str], str] = {}
    for path in files:
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if not {"site", "local_id", "person_id"} <= set(reader.fieldnames or ()):
                    raise EncodingFileError(f"{path}: a link table has columns site, local_id, "
                                            "person_id")
                for row in reader:
                    assigned[(row["site"], row["local_id"])] = row["person_id"]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise EncodingFileError(f"cannot read link table {path}: {exc}") from exc
    return assigned


@linkage_app.command("evaluate")
def evaluate_cmd(
    tables: Annotated[list[Path], typer.Argument(help="Link tables (site,local_id,person_id).")],
    truth: Annotated[Path, typer.Option("--truth", help="truth/linkage.csv of a synth run.")],
    json_out: JsonFlag = False,
) -> None:
    """Pairwise precision, recall and F1 of link tables against the synthetic truth."""
    try:
        quality = pairwise_quality(_read_tables(tables), read_truth(truth))
    except EncodingFileError as exc:
        _fail(str(exc), ExitCode.INPUT)
    data = quality.as_dict()
    _finish(data, json_out, [f"precision {data['precision']:.4f}  recall {data['recall']:.4f}  "
                             f"F1 {data['f1']:.4f}  ({quality.true_positives} true pairs found, "
                             f"{quality.false_positives} false, {quality.false_negatives} missed)"],
            None)


@linkage_app.command("sweep")
def sweep_cmd(
    encodings: Annotated[list[Path], typer.Argument(help="Encodings files, one per site.")],
    truth: Annotated[Path, typer.Option("--truth", help="truth/linkage.csv of a synth run.")],
    thresholds: Annotated[str, typer.Option(help="Comma-separated Dice thresholds.")] =
        "0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9",
    blocking: BlockingOption = "keys",
    json_out: JsonFlag = False,
) -> None:
    """Precision–recall curve: link at each threshold (no state kept) and evaluate."""
    try:
        levels = sorted({float(t) for t in thresholds.split(",")})
    except ValueError:
        _fail("--thresholds must be comma-separated numbers", ExitCode.USAGE)
    if not levels or not all(0 < t <= 1 for t in levels) or blocking not in BLOCKING_METHODS:
        _fail("thresholds must be in (0, 1] and --blocking one of keys, lsh, none",
              ExitCode.USAGE)
    problems: list[Reject] = []
    try:
        sites, _ = _read_all(encodings, problems)
        known = read_truth(truth)
    except EncodingFileError as exc:
        _fail(str(exc), ExitCode.INPUT)
    rows = []
    for level in levels:
        clusters = link_sites(sites, level, blocking)
        assigned = {(sites[i].site, sites[i].ids[k]): str(n)
                    for n, cluster in enumerate(clusters) for i, k in cluster}
        rows.append({"threshold": level, **pairwise_quality(assigned, known).as_dict()})
    table = Table(title="precision–recall by Dice threshold")
    for name in ("threshold", "precision", "recall", "f1"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*(f"{row[k]:.4f}" if k != "threshold" else f"{row[k]:.2f}"
                        for k in ("threshold", "precision", "recall", "f1")))
    if json_out:
        _emit_json({"rows": rows, "rejected": len(problems)})
    else:
        out.print(table)


@linkage_app.command("split")
def split_cmd(
    state: StateOption,
    site: Annotated[str, typer.Option("--site", help="Site of the record.")],
    record: Annotated[str, typer.Option("--record", help="The record's local id.")],
    steward: StewardOption,
    reason: ReasonOption,
    json_out: JsonFlag = False,
) -> None:
    """Take one record out of its network person (a steward's decision, audited)."""
    try:
        with LinkageState(_state_file(state)) as linkage:
            person = linkage.split(site, record, steward, reason)
    except LinkageStateError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    _finish({"site": site, "record": record, "person": person}, json_out,
            [f"{site}/{record} is now network person {person}"], None)


@linkage_app.command("merge")
def merge_cmd(
    keep: Annotated[str, typer.Argument(help="Network person id that stays.")],
    other: Annotated[str, typer.Argument(help="Network person id merged into it.")],
    state: StateOption,
    steward: StewardOption,
    reason: ReasonOption,
    json_out: JsonFlag = False,
) -> None:
    """Merge two network people (a steward's decision, audited)."""
    try:
        with LinkageState(_state_file(state)) as linkage:
            moved = linkage.merge(keep, other, steward, reason)
    except LinkageStateError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    _finish({"person": keep, "merged": other, "records": moved}, json_out,
            [f"{moved} record(s) of {other} now belong to {keep}"], None)


@linkage_app.command("audit")
def audit_cmd(state: StateOption, json_out: JsonFlag = False) -> None:
    """The linkage unit's audit trail: linking runs, splits and merges."""
    if not _state_file(state).exists():
        _fail(f"{state} holds no linkage state", ExitCode.CONFIG)
    try:
        with LinkageState(_state_file(state)) as linkage:
            trail = linkage.audit_trail()
    except LinkageStateError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"entries": trail})
        return
    for entry in trail:
        out.print(f"{entry['seq']:>4} {entry['at']} {entry['actor']:<16} {entry['action']:<6} "
                  f"{entry['reason']}  {orjson.dumps(entry['detail']).decode()}", highlight=False)
