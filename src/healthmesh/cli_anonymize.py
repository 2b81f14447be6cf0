"""``healthmesh anonymize``: k-anonymity, l-diversity and t-closeness on a CSV/Parquet table.

Thin: reads the table and the configuration, calls :func:`healthmesh.privacy.anonymize`,
writes the release and the rejects, prints a summary (or one JSON object with ``--json``).
Exit codes: 0 released; 1 released but some rows were rejected (see the rejects file), or
nothing released because the risk is above the configured limits or no generalisation
satisfies the models; 2 an output path of unknown kind; 3 bad configuration or hierarchy;
4 unreadable input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, console, out
from healthmesh.errors import InputError

__all__ = ["anonymize_command"]


def _reject_records(result: Any, frame: Any, source: Path) -> list[dict[str, Any]]:
    """Rejects name the row and the reason only: a row's content holds identifiers."""
    records = []
    for position, reason in zip(result.rejects["row"], result.rejects["reason"], strict=True):
        position = int(position)
        entry: dict[str, Any] = {"source": str(source), "row": position,
                                 "reason": str(reason)}
        if frame.index.name == "line":
            entry["line"] = int(frame.index[position])
        records.append(entry)
    return records


def _print_summary(summary: dict[str, Any], out_file: Path) -> None:
    levels = ", ".join(f"{k} {v}" for k, v in summary["levels"].items())
    out.print(f"released {summary['records']} records to {out_file}")
    out.print(f"levels: {levels}")
    out.print(f"suppressed {summary['suppressed']} records; {summary['classes']} equivalence "
              f"classes; {summary['metric']} {summary['utility']:.4f}")
    table = Table(title="re-identification risk (prosecutor; sample = population)")
    for column in ("", "before", "after"):
        table.add_column(column, justify="right" if column else "left")
    for label, key in (("average", "prosecutor_average"), ("highest", "prosecutor_highest"),
                       ("records at risk", "prosecutor_records_at_risk"),
                       ("unique records", "unique_share")):
        table.add_row(label, f"{summary['risk_before'][key]:.4f}",
                      f"{summary['risk_after'][key]:.4f}")
    out.print(table)


@app.command("anonymize")
def anonymize_command(
    source: Annotated[Path, typer.Argument(help="Input table: .csv, .tsv or .parquet "
                                           "(e.g. the output of `views run --format parquet`).")],
    config_file: Annotated[Path, typer.Option("--config", help="Anonymisation configuration "
                                              "(JSON or YAML).")],
    out_file: Annotated[Path, typer.Option("--out", help="Released table (.csv, .tsv or "
                                           ".parquet); written only if the release passes.")],
    rejects: Annotated[Path | None, typer.Option(
        help="Rejects file (default: OUT.rejects.ndjson, written only when rows are rejected)"
    )] = None,
    delimiter: Annotated[str | None, typer.Option(
        help="CSV field separator (default: detected from the header)")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Anonymise a table: optimal generalisation + suppression, risk before/after, release."""
    from healthmesh.privacy.anonymize import (
        AnonymizationConfigError,
        HierarchyError,
        NoAnonymousTransformation,
        ReleaseRefused,
        anonymize,
        load_config,
    )
    from healthmesh.privacy.anonymize.tableio import (
        check_output,
        read_table,
        write_rejects,
        write_table,
    )

    try:
        check_output(out_file)
    except InputError as exc:
        _fail(f"--out: {exc}", ExitCode.USAGE)
    try:
        config = load_config(config_file)
    except (AnonymizationConfigError, HierarchyError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    try:
        frame, read_rejects = read_table(source, delimiter)
        result = anonymize(frame, config)
    except InputError as exc:
        _fail(str(exc), ExitCode.INPUT)
    except (AnonymizationConfigError, HierarchyError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    except ReleaseRefused as exc:
        if json_out:
            _emit_json({"released": False, "reason": str(exc), "violations": [
                {"measure": m, "value": v, "limit": lim} for m, v, lim in exc.violations],
                "risk_after": exc.risk})
        _fail(f"{exc}; nothing was written", ExitCode.REJECTED)
    except NoAnonymousTransformation as exc:
        if json_out:
            _emit_json({"released": False, "reason": str(exc)})
        _fail(f"{exc}; nothing was written", ExitCode.REJECTED)
    try:
        write_table(result.table, out_file)
    except (OSError, InputError) as exc:
        _fail(f"cannot write {out_file}: {exc}", ExitCode.INPUT)
    all_rejects = read_rejects + _reject_records(result, frame, source)
    rejects_path = rejects or out_file.with_name(out_file.name + ".rejects.ndjson")
    if all_rejects:
        write_rejects(all_rejects, rejects_path)
    summary = {"released": True, "out": str(out_file), **result.summary(),
               "rejected": len(all_rejects),
               "rejects_file": str(rejects_path) if all_rejects else None}
    if json_out:
        _emit_json(summary)
    else:
        _print_summary(summary, out_file)
        if all_rejects:
            console.print(f"[yellow]{len(all_rejects)} rows rejected[/yellow]: see "
                          f"{rejects_path}", highlight=False)
    if all_rejects:
        raise typer.Exit(int(ExitCode.REJECTED))
