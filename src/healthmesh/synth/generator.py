"""``generate()``: the synthetic population and the FHIR R4 records each site holds about it.

The loop is household by household, person by person: simulate the person's life
(:func:`~healthmesh.synth.care.simulate`), draw each site's noisy copy of their demographics
(:func:`~healthmesh.synth.noise.record`, for every site kind so that a site's output does not
depend on which other sites are generated), render each selected site's chart and write it
at once. Nothing about a person is kept after their household is written.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from .care import simulate
from .clinical import Window
from .keys import derive
from .noise import PROFILES, record
from .population import households, load_region
from .services import render
from .sites import SITE_KINDS, Site
from .timeline import Clock
from .writer import Writer, write_manifest

__all__ = ["FORMATS", "GENERATOR_VERSION", "generate"]

GENERATOR_VERSION = "1.0.0"
FORMATS = ("ndjson", "bundle")
_PROGRESS_STEP = 50


def generate(out_dir: Path, *, patients: int, sites: Sequence[str] = SITE_KINDS, seed: int = 0,
             start: date = date(2015, 1, 1), end: date = date(2025, 12, 31),
             fmt: str = "ndjson", region: str = "default",
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate ``patients`` people and their records at ``sites`` into ``out_dir``.

    Writes ``<site>/<ResourceType>.ndjson`` (or ``<site>/bundles/*.json`` transaction Bundles
    with ``fmt="bundle"``), ``truth/linkage.csv`` and ``manifest.json``; returns the manifest.
    The same arguments give byte-identical output. ``progress(n)`` is called with the number
    of people done so far. Raises ``ValueError`` for bad arguments (including a non-empty
    ``out_dir``).
    """
    kinds = _check(patients, sites, seed, start, end, fmt)
    geo = load_region(region)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output directory {out} exists and is not empty")
    window = Window(start.toordinal(), end.toordinal())
    clock = Clock(geo.tz)
    chosen = [Site(kind, seed, geo) for kind in kinds]
    with Writer(out, kinds, fmt) as writer:
        for site in chosen:
            writer.site_resources(site.kind, site.static_resources())
        done = 0
        for house in households(seed, geo, window.end, patients):
            rng = random.Random(derive(seed, "life", house.index))
            for person in house.members:
                life = simulate(person, window, rng)
                copies = {kind: record(person, kind, rng) for kind in SITE_KINDS}
                for site in chosen:
                    chart = render(site, life, copies[site.kind], clock, geo)
                    if chart is not None:
                        writer.patient(site.kind, chart.out, _truth_row(site, chart.pid, person))
            done += len(house.members)
            if progress is not None and (done >= patients or done % _PROGRESS_STEP < len(
                    house.members)):
                progress(done)
    manifest = _manifest(writer, kinds, patients, seed, start, end, fmt, geo.name)
    write_manifest(out, manifest)
    return manifest


def _check(patients: int, sites: Sequence[str] | str, seed: int, start: date, end: date,
           fmt: str) -> list[str]:
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise ValueError(f"patients must be a positive integer, got {patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(start, date) or not isinstance(end, date):
        raise ValueError("start and end must be dates")
    if start >= end:
        raise ValueError(f"start ({start}) must be before end ({end})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    kinds = [s.strip() for s in sites.split(",")] if isinstance(sites, str) else list(sites)
    if not kinds:
        raise ValueError("at least one site kind is required")
    unknown = [k for k in kinds if k not in SITE_KINDS]
    if unknown:
        raise ValueError(f"unknown site kind(s) {', '.join(map(repr, unknown))}: "
                         f"use {', '.join(SITE_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"duplicate site kinds in {kinds}")
    return kinds


def _truth_row(site: Site, pid: str, person: Any) -> str:
    return (f"{site.kind},Patient,{pid},{site.mrn(person.index)},{person.key},"
            f"{person.household.key},{person.role}\n")


def _manifest(writer: Writer, kinds: list[str], patients: int, seed: int, start: date,
              end: date, fmt: str, region: str) -> dict[str, Any]:
    sites = {kind: {"organization": f"Organization/{kind}", "patients": writer.patients[kind],
                    "resources": dict(sorted(writer.counts[kind].items())),
                    "total": sum(writer.counts[kind].values()), "files": writer.files(kind)}
             for kind in kinds}
    return {
        "generator": "healthmesh.synth", "version": GENERATOR_VERSION, "seed": seed,
        "fhirVersion": "4.0.1",
        "parameters": {"patients": patients, "sites": kinds, "start": start.isoformat(),
                       "end": end.isoformat(), "format": fmt, "region": region},
        "sites": sites,
        "totals": {"people": patients,
                   "resources": sum(s["total"] for s in sites.values())},
        "truth": "truth/linkage.csv",
        "noise": {kind: _profile_dict(kind) for kind in kinds},
    }


def _profile_dict(kind: str) -> dict[str, Any]:
    profile = PROFILES[kind]
    return {name: getattr(profile, name) for name in profile.__dataclass_fields__}
