"""Patient-reported outcomes: the questionnaires of the portal and their responses.

Definitions ship in ``web/data/questionnaires.json`` (PHQ-9 with its LOINC codes, and an
experience-of-care set). :func:`build_response` turns a submitted form into a FHIR
``QuestionnaireResponse`` — every question answered with one of its options, texts in
the patient's language, the PHQ-9 total score as an extra item — or raises
:class:`IncompleteAnswers` naming what is missing or invalid. The portal stores the
response through the patient's guarded repository (scopes and audit apply).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from healthmesh.web.errors import PageError

__all__ = ["IncompleteAnswers", "Questionnaire", "build_response", "phq9_severity",
           "questionnaires"]

DATA = Path(__file__).parent / "data" / "questionnaires.json"
PHQ9_BANDS = ((20, "severe"), (15, "moderately-severe"), (10, "moderate"), (5, "mild"),
              (0, "minimal"))


class IncompleteAnswers(PageError):
    """A questionnaire post with unanswered or invalid questions (``missing``: linkIds)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} question(s) are not answered", 422)
        self.missing = missing


@dataclass(frozen=True)
class Questionnaire:
    """One questionnaire definition (see the data file)."""

    name: str
    url: str
    version: str
    title: str
    intro: str
    system: str
    options: tuple[dict[str, Any], ...]
    items: tuple[dict[str, Any], ...]
    total: dict[str, Any] | None
    comment: dict[str, Any] | None

    def option(self, code: str) -> dict[str, Any] | None:
        return next((o for o in self.options if o["code"] == code), None)


@functools.cache
def questionnaires() -> dict[str, Questionnaire]:
    """Every questionnaire the portal offers, by name."""
    data = orjson.loads(DATA.read_bytes())
    out = {}
    for name, q in data.items():
        if name.startswith("_"):
            continue
        out[name] = Questionnaire(name, q["url"], q["version"], q["title"], q["intro"],
                                  q["answers"]["system"], tuple(q["answers"]["options"]),
                                  tuple(q["items"]), q.get("total"), q.get("comment"))
    return out


def phq9_severity(score: int) -> str:
    """The PHQ-9 severity band of a total score (0-27): minimal ... severe."""
    return next(band for low, band in PHQ9_BANDS if score >= low)


def build_response(q: Questionnaire, form: Mapping[str, list[str]], patient: str,
                   t: Callable[..., str]) -> dict[str, Any]:
    """The QuestionnaireResponse of a submitted form (raises IncompleteAnswers)."""
    items, missing, score = [], [], 0
    for item in q.items:
        values = form.get(item["linkId"], [])
        option = q.option(values[0]) if len(values) == 1 else None
        if option is None:
            missing.append(item["linkId"])
            continue
        score += int(option["score"])
        items.append({"linkId": item["linkId"], "text": t(item["text"]), "answer": [
            {"valueCoding": {"system": q.system, "code": option["code"],
                             "display": t(option["text"])}}]})
    if missing:
        raise IncompleteAnswers(missing)
    if q.total is not None:
        items.append({"linkId": q.total["linkId"], "text": t(q.total["text"]),
                      "answer": [{"valueInteger": score}]})
    if q.comment is not None:
        text = (form.get(q.comment["linkId"], [""])[0]).strip()
        if len(text) > int(q.comment["max_length"]):
            raise IncompleteAnswers([q.comment["linkId"]])
        if text:
            items.append({"linkId": q.comment["linkId"], "text": t(q.comment["text"]),
                          "answer": [{"valueString": text}]})
    return {
        "resourceType": "QuestionnaireResponse", "id": uuid.uuid4().hex,
        "questionnaire": f"{q.url}|{q.version}", "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "author": {"reference": f"Patient/{patient}"},
        "source": {"reference": f"Patient/{patient}"},
        "authored": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "item": items,
    }


def total_score(response: Mapping[str, Any], q: Questionnaire) -> int | None:
    """The total score item of a stored response (None when the questionnaire has none)."""
    if q.total is None:
        return None
    for item in response.get("item", []):
        if item.get("linkId") == q.total["linkId"]:
            return int(item["answer"][0]["valueInteger"])
    return None


def needs_alert(response: Mapping[str, Any], q: Questionnaire) -> bool:
    """True when an item with an alert threshold (PHQ-9 item 9) reached it."""
    thresholds = {i["linkId"]: i["alert_at"] for i in q.items if "alert_at" in i}
    for item in response.get("item", []):
        limit = thresholds.get(item.get("linkId"))
        if limit is None:
            continue
        option = q.option(item["answer"][0]["valueCoding"]["code"])
        if option is not None and int(option["score"]) >= limit:
            return True
    return False
