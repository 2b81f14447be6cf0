"""``healthmesh deid``: de-identify FHIR files; ``deid-keygen`` and ``deid-reidentify``.

Thin layer over :mod:`healthmesh.privacy.deid`; registered on the main app by
:mod:`healthmesh.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, console, out
from healthmesh.errors import ConfigError, InputError

if TYPE_CHECKING:  # the privacy package is imported when a command runs, not at startup
    from healthmesh.privacy.deid import DeidKey

PROFILE_NAMES = ("safe-harbor", "date-shift", "pseudonymize")

KeyOpt = Annotated[Path | None, typer.Option("--key-file", help="Project key file (from "
                                             "'healthmesh deid-keygen').")]


def _key(path: Path | None) -> DeidKey | None:
    from healthmesh.privacy.deid import DeidKeyError, load_key_file

    if path is None:
        return None
    try:
        return load_key_file(path)
    except DeidKeyError as exc:
        _fail(str(exc), ExitCode.CONFIG)


@app.command("deid")
def deid(
    inputs: Annotated[list[Path], typer.Argument(help="NDJSON or Bundle files or folders.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (new or empty).")],
    profile: Annotated[str, typer.Option(help="safe-harbor, date-shift or pseudonymize.")]
    = "safe-harbor",
    key_file: KeyOpt = None,
    scrubbed_text: Annotated[bool, typer.Option(
        "--scrubbed-text", help="Keep free text after the PHI scrubber (a data steward's "
                                "decision) instead of dropping it.")] = False,
    age_at_event: Annotated[bool, typer.Option(
        "--age-at-event", help="Drop birth dates; add the patient's age at each event.")]
    = False,
    max_shift_days: Annotated[int, typer.Option(help="Largest date shift, in days.")] = 365,
    keep_canonical: Annotated[list[str] | None, typer.Option(
        "--keep-canonical", help="Keep canonical URLs with this prefix (questionnaires, "
                                 "profiles that name no person); repeatable.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """De-identify FHIR resources into one NDJSON file per type (rejects beside --out)."""
    from healthmesh.privacy.deid import DeidConfigError, Deidentifier, DeidError
    from healthmesh.privacy.deid.files import birth_dates, deidentify_files

    if profile not in PROFILE_NAMES:
        _fail(f"--profile must be one of {', '.join(PROFILE_NAMES)}", ExitCode.USAGE)
    key = _key(key_file)
    try:
        births = birth_dates(inputs) if age_at_event else None
        deidentifier = Deidentifier(profile, key, allow_scrubbed_text=scrubbed_text,
                                    age_at_event=age_at_event, birth_dates=births,
                                    max_shift_days=max_shift_days,
                                    keep_canonicals=tuple(keep_canonical or ()))
        report = deidentify_files(inputs, out_dir, deidentifier)
    except DeidConfigError as exc:
        _fail(str(exc), ExitCode.USAGE)
    except InputError as exc:
        _fail(str(exc), ExitCode.INPUT)
    except DeidError as exc:
        _fail(str(exc), ExitCode.USAGE)
    total = sum(report.written.values())
    rejects = str(report.rejects_file) if report.rejects_file else None
    if json_out:
        _emit_json({"profile": profile, "out": str(out_dir), "written": report.written,
                    "total": total, "rejected": report.rejected, "rejects_file": rejects,
                    "key": None if key is None else key.fingerprint})
    else:
        out.print(f"{total} resources de-identified ({profile}) into {out_dir}",
                  highlight=False)
        for rtype, count in sorted(report.written.items()):
            out.print(f"  {rtype:<28}{count:>8}", highlight=False)
    if report.rejected:
        console.print(f"[yellow]{report.rejected} rejected[/yellow]: see {rejects}",
                      highlight=False)
        raise typer.Exit(int(ExitCode.REJECTED))


@app.command("deid-keygen")
def deid_keygen(
    key_file: Annotated[Path, typer.Argument(help="New key file to create (mode 0600).")],
    json_out: JsonFlag = False,
) -> None:
    """Create a project key for keyed pseudonyms and date shifts (one per project)."""
    from healthmesh.privacy.deid import DeidKeyError, generate_key_file

    try:
        key = generate_key_file(key_file)
    except DeidKeyError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if json_out:
        _emit_json({"key_file": str(key_file), "fingerprint": key.fingerprint})
    else:
        out.print(f"key {key.fingerprint} written to {key_file} (keep it secret; "
                  "anyone holding it can re-identify)", highlight=False)


@app.command("deid-reidentify")
def deid_reidentify(
    pseudonyms: Annotated[list[str], typer.Argument(help="Pseudonyms (id or Type/id).")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The project key file.")],
    node: Annotated[Path, typer.Option("--node", help="Node folder whose ids to search "
                                                      "(the lookup is audited there).")],
    rtype: Annotated[str, typer.Option("--type", help="Resource type of the ids.")]
    = "Patient",
    requester: Annotated[str, typer.Option(help="Who asks (written to the audit log).")]
    = "system",
    reason: Annotated[str, typer.Option(help="Why (written to the audit log).")]
    = "re-identification",
    json_out: JsonFlag = False,
) -> None:
    """Find the node's ids behind pseudonyms (needs the project key; audited)."""
    from healthmesh.audit import InvalidAuditRecord
    from healthmesh.fhir.validation import resource_types
    from healthmesh.privacy.deid.reidentify import reidentify_at_node

    if rtype not in resource_types():
        _fail(f"--type {rtype!r} is not a FHIR R4 resource type", ExitCode.USAGE)
    key = _key(key_file)
    assert key is not None
    if not (node / "node.toml").exists():
        _fail(f"{node} is not a node folder", ExitCode.CONFIG)
    try:
        found = reidentify_at_node(node, key, rtype, pseudonyms, actor=requester,
                                   reason=reason)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    except InvalidAuditRecord as exc:
        _fail(str(exc), ExitCode.USAGE)
    if json_out:
        _emit_json({"type": rtype, "found": found})
    else:
        for pseudonym, ids in found.items():
            out.print(f"{pseudonym}\t{', '.join(ids) if ids else '(no match)'}",
                      highlight=False)
    if not any(found.values()):
        raise typer.Exit(int(ExitCode.REJECTED))
