"""Observation and DiagnosticReport builders: vital signs, lab panels, genomics, wearables.

Vital signs follow the FHIR vital-signs profile (blood pressure as the 85354-9 panel with
8480-6 / 8462-4 components in ``mm[Hg]``); lab results are grouped by DiagnosticReports;
genomic results follow the HL7 genomics-reporting style (69548-6 variant Observations with
gene, c.HGVS / g.HGVS and clinical-significance components under an 81247-9 report);
wearable data are weekly summaries (mean daily steps 41950-7, resting heart rate 40443-4,
home blood pressure) that reference the Device that measured them.
"""

from __future__ import annotations

from typing import Any

from . import codes
from .clinical import ANALYTES, Lab
from .codes import OBS, UCUM
from .programs import GENE_PANELS, VARIANTS
from .sites import Chart
from .timeline import Clock, year_of

__all__ = ["blood_pressure", "lab_report", "quantity", "vital"]

_GDIS = {"security": codes.SECURITY["GDIS"]}
_UNITS = {"weight": "kg", "height": "cm", "bmi": "kg/m2", "hr": "/min", "resting_hr": "/min",
          "steps": "/d"}


def quantity(value: float, unit: str) -> dict[str, Any]:
    """A UCUM Quantity."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _base(chart: Chart, code: str, category: list[Any], encounter: dict[str, str] | None,
          when: str) -> dict[str, Any]:
    obs = {"resourceType": "Observation", "id": chart.new_id(), "status": "final",
           "category": category, "code": OBS[code], "subject": chart.subject}
    if encounter is not None:
        obs["encounter"] = encounter
    obs["effectiveDateTime"] = when
    return obs


def blood_pressure(chart: Chart, encounter: dict[str, str] | None, when: str, sbp: int, dbp: int,
                   performer: dict[str, str] | None = None) -> dict[str, Any]:
    """A blood pressure panel Observation."""
    obs = _base(chart, "bp", codes.VITAL_SIGNS, encounter, when)
    if performer is not None:
        obs["performer"] = [performer]
    obs["component"] = [{"code": OBS["sbp"], "valueQuantity": quantity(sbp, "mm[Hg]")},
                        {"code": OBS["dbp"], "valueQuantity": quantity(dbp, "mm[Hg]")}]
    return obs


def vital(chart: Chart, code: str, encounter: dict[str, str] | None, when: str,
          value: float) -> dict[str, Any]:
    """A single-valued vital sign (weight, height, BMI, heart rate)."""
    obs = _base(chart, code, codes.VITAL_SIGNS, encounter, when)
    obs["valueQuantity"] = quantity(value, _UNITS[code])
    return obs


def smoking(chart: Chart, encounter: dict[str, str], when: str, status: str) -> dict[str, Any]:
    """Tobacco smoking status (72166-2)."""
    obs = _base(chart, "smoking", codes.SOCIAL_HISTORY, encounter, when)
    obs["valueCodeableConcept"] = codes.SMOKING[status]
    return obs


def phq9_total(chart: Chart, encounter: dict[str, str], when: str, total: int) -> dict[str, Any]:
    """PHQ-9 total score (44261-6), labelled PSY."""
    obs = _base(chart, "phq9_total", codes.SURVEY, encounter, when)
    obs["meta"] = {"security": codes.SECURITY["PSY"]}
    obs["valueInteger"] = total
    return obs


def _analyte_code(analyte: str, lab: Lab, values: dict[str, float]) -> str:
    if analyte == "egfr":
        return "egfr_mdrd" if year_of(lab.day) < 2018 else "egfr_ckdepi"
    if analyte == "ldl":
        return "ldl_direct" if values.get("triglycerides", 0) >= 400 else "ldl_calc"
    return analyte


def lab_report(chart: Chart, clock: Clock, lab: Lab, encounter: dict[str, str] | None,
               performer: dict[str, str], interpreter: dict[str, str] | None) -> None:
    """A lab panel as Observations grouped by a DiagnosticReport, added to ``chart``."""
    if lab.panel.startswith("genetic:"):
        _genetic_report(chart, clock, lab, performer, interpreter)
        return
    when = clock.at(lab.day, lab.minute)
    values = dict(lab.results)
    results = []
    for analyte, value in lab.results:
        obs = _base(chart, _analyte_code(analyte, lab, values), codes.LABORATORY, encounter, when)
        obs["valueQuantity"] = quantity(value, ANALYTES[analyte][0])
        results.append(chart.link(obs))
    chart.add(_report(chart, clock, lab, lab.panel, codes.LAB_REPORT, encounter, performer,
                      interpreter, results))


def _report(chart: Chart, clock: Clock, lab: Lab, code: str, category: list[Any],
            encounter: dict[str, str] | None, performer: dict[str, str],
            interpreter: dict[str, str] | None, results: list[dict[str, str]]) -> dict[str, Any]:
    report = {"resourceType": "DiagnosticReport", "id": chart.new_id(), "status": "final",
              "category": category, "code": OBS[code], "subject": chart.subject}
    if encounter is not None:
        report["encounter"] = encounter
    report["effectiveDateTime"] = clock.at(lab.day, lab.minute)
    report["issued"] = clock.at(lab.day, min(1439, lab.minute + 180))
    report["performer"] = [performer]
    if interpreter is not None:
        report["resultsInterpreter"] = [interpreter]
    if results:
        report["result"] = results
    return report


def _genetic_report(chart: Chart, clock: Clock, lab: Lab, performer: dict[str, str],
                    interpreter: dict[str, str] | None) -> None:
    when = clock.at(lab.day, lab.minute)
    results = [chart.link(_variant(chart, when, key)) for key in lab.variants or ()]
    genes = ", ".join(GENE_PANELS[lab.panel.split(":", 1)[1]])
    report = _report(chart, clock, lab, "genetic", codes.GENETICS_REPORT, None, performer,
                     interpreter, results)
    report["meta"] = _GDIS
    report["conclusion"] = (f"Variants identified in tested genes ({genes})." if results else
                            f"No reportable variants identified in {genes}.")
    chart.add(report)


def _variant(chart: Chart, when: str, key: str) -> dict[str, Any]:
    gene, hgnc, c_hgvs, g_hgvs, significance = VARIANTS[key]
    obs = _base(chart, "variant", codes.LABORATORY, None, when)
    obs["meta"] = _GDIS
    obs["valueCodeableConcept"] = {"coding": [codes.LA["present"]]}
    components = [
        {"code": OBS["gene"], "valueCodeableConcept": {"coding": [
            {"system": codes.HGNC, "code": hgnc, "display": gene}]}},
        {"code": OBS["c_hgvs"], "valueCodeableConcept": {"coding": [
            {"system": codes.HGVS, "code": c_hgvs}]}},
        {"code": OBS["g_hgvs"], "valueCodeableConcept": {"coding": [
            {"system": codes.HGVS, "code": g_hgvs}]}},
    ]
    if significance == "risk":
        obs["note"] = [{"text": "APOE e4 allele: risk factor for late-onset Alzheimer disease."}]
    else:
        components.append({"code": OBS["significance"],
                           "valueCodeableConcept": {"coding": [codes.LA[significance]]}})
    obs["component"] = components
    return obs


def monitoring(chart: Chart, clock: Clock, program: dict[str, Any], bp_series: list[tuple[int, int]]
               ) -> None:
    """Devices and weekly wearable / home blood pressure summaries."""
    tracker = chart.link(_device(chart, "Wrist-worn activity tracker", None))
    cuff = chart.link(_device(chart, "Home blood pressure monitor", "70665002")) \
        if program["bp_cuff"] else None
    start = program["start"]
    for week, (steps, rhr) in enumerate(program["series"]):
        lo, hi = start + 7 * week, start + 7 * week + 6
        period = {"start": clock.at(lo, 0), "end": clock.at(hi, 1439)}
        chart.add(_weekly(chart, "steps", codes.ACTIVITY, period, tracker, quantity(steps, "/d")))
        chart.add(_weekly(chart, "resting_hr", codes.VITAL_SIGNS, period, tracker,
                          quantity(rhr, "/min")))
        if cuff is not None and week < len(bp_series):
            obs = blood_pressure(chart, None, clock.at(hi, 1200), *bp_series[week])
            obs["device"] = cuff
            chart.add(obs)


def _weekly(chart: Chart, code: str, category: list[Any], period: dict[str, str],
            device: dict[str, str], value: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": chart.new_id(), "status": "final",
            "category": category, "code": OBS[code], "subject": chart.subject,
            "effectivePeriod": period, "valueQuantity": value, "device": device}


def _device(chart: Chart, name: str, snomed: str | None) -> dict[str, Any]:
    kind = codes.concept(codes.SCT, snomed, "Blood pressure cuff, device (physical object)") \
        if snomed else codes.text_concept(name)
    return {"resourceType": "Device", "id": chart.new_id(), "status": "active",
            "manufacturer": "Healthmesh Devices (synthetic)",
            "deviceName": [{"name": name, "type": "user-friendly-name"}],
            "type": kind, "patient": chart.subject}
