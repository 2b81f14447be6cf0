"""``healthmesh terminology ...`` commands and the ``--mapping`` mode of ``healthmesh ingest``.

Registered on the main app by :mod:`healthmesh.cli`. ``terminology lookup`` answers from
the code lists the node ships (:mod:`healthmesh.terminology`); ``terminology convert``
converts a quantity between UCUM units; ``terminology valuesets`` lists the value sets.
:func:`ingest_with_mapping` is what ``healthmesh ingest DIR --mapping M DATA...`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, console, out
from healthmesh.errors import ConfigError, InputError

__all__ = ["ingest_with_mapping"]

terminology_app = typer.Typer(help="The node's code lists: look up codes, convert units.",
                              no_args_is_help=True)
app.add_typer(terminology_app, name="terminology")


def _matches(code: str, system: str | None) -> list[dict[str, Any]]:
    from healthmesh.terminology import code_system, code_systems, translate, value_sets

    if system is not None:
        cs = code_system(system)
        if cs is None:
            _fail(f"unknown code system {system!r} (known: {', '.join(code_systems())}; "
                  "or loinc, snomed, icd10cm, icd10, rxnorm, cvx)", ExitCode.USAGE)
        candidates = [cs]
    else:
        candidates = list(code_systems().values())
    found = []
    for cs in candidates:
        display = cs.display(code)
        if display is None:
            continue
        found.append({
            "system": cs.url, "system_name": cs.name, "code": code, "display": display,
            "value_sets": [n for n, vs in value_sets().items() if vs.contains(cs.url, code)],
            "maps_to": [{"system": t.system, "code": t.code, "display": t.display,
                         "equivalence": t.equivalence} for t in translate(cs.url, code)],
        })
    return found


@terminology_app.command("lookup")
def terminology_lookup(
    code: Annotated[str, typer.Argument(help="The code, e.g. 4548-4, 38341003, I10.")],
    system: Annotated[str | None, typer.Option(
        help="Code system URL or short name (loinc, snomed, icd10cm, icd10, rxnorm, cvx); "
             "default: every shipped system.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show a code's display, the value sets holding it and its ICD-10-CM/SNOMED CT maps."""
    from healthmesh.terminology import code_system
    from healthmesh.terminology.codesystems import syntax_problem

    code = code.strip()
    found = _matches(code, system)
    if not found:
        reason = f"code {code!r} is not in the node's code lists"
        cs = code_system(system) if system else None
        if cs is not None and (problem := syntax_problem(cs, code)):
            reason = f"{cs.name} code {code!r} {problem}"
        if json_out:
            _emit_json({"code": code, "found": [], "reason": reason})
        else:
            console.print(f"[yellow]{reason}[/yellow]", highlight=False)
        raise typer.Exit(int(ExitCode.REJECTED))
    if json_out:
        _emit_json({"code": code, "found": found})
        return
    for item in found:
        out.print(f"[bold]{item['system_name']}[/bold] {item['code']}  {item['display']}",
                  highlight=False)
        out.print(f"  system: {item['system']}", highlight=False)
        if item["value_sets"]:
            out.print(f"  value sets: {', '.join(item['value_sets'])}", highlight=False)
        for m in item["maps_to"]:
            out.print(f"  maps to: {m['system']}|{m['code']} {m['display'] or ''} "
                      f"({m['equivalence']})", highlight=False)


@terminology_app.command("convert")
def terminology_convert(
    value: Annotated[float, typer.Argument(help="The value to convert.")],
    source: Annotated[str, typer.Argument(help="Its unit (UCUM, e.g. mg/dL, [lb_av], Cel).")],
    target: Annotated[str, typer.Argument(help="The unit wanted (UCUM).")],
    analyte: Annotated[str | None, typer.Option(
        help="What is measured, for mg/dL <-> mmol/L and HbA1c % <-> mmol/mol: glucose, "
             "cholesterol, triglycerides, creatinine, potassium, hba1c.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Convert a quantity between UCUM units (by the analyte's molar mass when needed)."""
    from healthmesh.terminology import UnitError, convert, ucum_code

    try:
        result = convert(value, source, target, analyte_name=analyte)
    except UnitError as exc:
        _fail(str(exc), ExitCode.USAGE)
    if json_out:
        _emit_json({"value": value, "unit": ucum_code(source), "result": result,
                    "result_unit": ucum_code(target), "analyte": analyte})
    else:
        out.print(f"{result:g} {ucum_code(target)}", highlight=False)


@terminology_app.command("valuesets")
def terminology_valuesets(json_out: JsonFlag = False) -> None:
    """List the shipped value sets (name, title, number of codes, canonical URL)."""
    from healthmesh.terminology import value_sets

    rows: list[dict[str, Any]] = [
        {"name": vs.name, "title": vs.title, "codes": len(vs.codes), "url": vs.url,
         "source": vs.source} for vs in value_sets().values()]
    if json_out:
        _emit_json({"value_sets": rows})
        return
    table = Table()
    for column in ("name", "title", "codes"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["title"], str(row["codes"]))
    out.print(table)


def _data_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower()
                                in (".csv", ".tsv", ".txt", ".parquet", ".parq", ".pq")))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not files:
        raise InputError("no CSV or Parquet files to load")
    return files


def ingest_with_mapping(folder: Path, mapping_name: str, paths: list[Path],
                        rejects_path: Path, json_out: bool, quiet: bool) -> None:
    """``healthmesh ingest DIR --mapping M DATA...``: map flat files into the node."""
    from healthmesh.mapping import load, run_mapping
    from healthmesh.node import open_node

    try:
        mapping = load(mapping_name)
        files = _data_files(paths)
    except InputError as exc:
        _fail(str(exc), ExitCode.INPUT)
    try:
        node = open_node(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    try:
        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                      TextColumn("{task.completed} rows"), console=console,
                      disable=quiet or json_out, transient=True) as progress:
            task = progress.add_task(f"ingest --mapping {mapping.id}")
            stats = run_mapping(node, mapping, files, rejects_path=rejects_path,
                                progress=lambda n: progress.advance(task, n))
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    except InputError as exc:
        _fail(str(exc), ExitCode.INPUT)
    except KeyboardInterrupt:
        _fail("interrupted; committed batches are kept — rerun the same command to complete",
              ExitCode.INTERRUPTED)
    finally:
        node.close()
    _report(stats, json_out)
    if stats.rejected:
        raise typer.Exit(int(ExitCode.REJECTED))


def _report(stats: Any, json_out: bool) -> None:
    if json_out:
        _emit_json(stats.as_dict())
        return
    out.print(f"files {stats.files}  rows {stats.rows}  skipped {stats.skipped}  "
              f"rejected {stats.rejected}  resources {stats.resources} (created "
              f"{stats.created}, updated {stats.updated}, unchanged {stats.unchanged})  "
              f"code warnings {stats.warnings}", highlight=False)
    if stats.rejects_file:
        console.print(f"[yellow]rejected rows and reasons:[/yellow] {stats.rejects_file}")
