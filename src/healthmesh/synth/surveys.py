"""Patient-reported outcome and experience measures, and SDOH screening.

Three Questionnaires are shipped by the sites that use them: the PHQ-9 (LOINC 44249-1,
total score 44261-6, answer list LL358-3), a 0-10 pain numeric rating scale (LOINC 72514-3)
and a short experience-of-care survey (an overall 0-10 rating and four agreement items in the
style of CAHPS). Responses are QuestionnaireResponses; the PHQ-9 total score is also an
Observation, and social-needs screening answers (Hunger Vital Sign, PRAPARE housing and
education, income) are Observations as in the Gravity Project / US Core SDOH guidance.
"""

from __future__ import annotations

from typing import Any

from . import codes
from .codes import LOINC, OBS, PHQ_ANSWERS, PHQ_ITEMS, coding

__all__ = ["QUESTIONNAIRES", "experience_response", "pain_response", "phq9_response",
           "questionnaire", "sdoh_observations"]

_URL = "urn:healthmesh:questionnaire:"
_AGREE_SYSTEM = "urn:healthmesh:codesystem:agreement"
_AGREE = tuple(coding(_AGREE_SYSTEM, str(i), d) for i, d in enumerate(
    ("Strongly disagree", "Disagree", "Neither agree nor disagree", "Agree", "Strongly agree"),
    start=1))
_EXPERIENCE_ITEMS = (
    ("rating", "Using any number from 0 to 10, where 0 is the worst care possible and 10 the "
               "best care possible, what number would you use to rate your care?"),
    ("explained", "The staff explained things in a way that was easy to understand."),
    ("listened", "The staff listened carefully to you."),
    ("respect", "The staff treated you with courtesy and respect."),
    ("recommend", "You would recommend this place to your friends and family."),
)
PSY = {"security": codes.SECURITY["PSY"]}


def _phq9() -> dict[str, Any]:
    items = [{"linkId": code, "code": [coding(LOINC, code, text)], "text": text, "type": "choice",
              "required": True, "answerOption": [{"valueCoding": a} for a in PHQ_ANSWERS]}
             for code, text in PHQ_ITEMS]
    items.append({"linkId": "44261-6", "code": [coding(LOINC, "44261-6", "PHQ-9 total score")],
                  "text": "Total score", "type": "integer", "readOnly": True})
    return {"name": "PHQ9", "title": "Patient Health Questionnaire (PHQ-9)",
            "code": [coding(LOINC, "44249-1", "PHQ-9 quick depression assessment panel")],
            "item": items}


def _pain() -> dict[str, Any]:
    text = "On a scale of 0 to 10, how much pain do you have right now?"
    return {"name": "PainNRS", "title": "Pain numeric rating scale (0-10)",
            "code": [coding(LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating")],
            "item": [{"linkId": "72514-3", "text": text, "type": "integer", "required": True}]}


def _experience() -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"linkId": "rating", "text": _EXPERIENCE_ITEMS[0][1], "type": "integer"}]
    items += [{"linkId": link, "text": text, "type": "choice",
               "answerOption": [{"valueCoding": a} for a in _AGREE]}
              for link, text in _EXPERIENCE_ITEMS[1:]]
    return {"name": "ExperienceOfCare", "title": "Patient experience of care", "item": items}


QUESTIONNAIRES = {"phq-9": _phq9(), "pain-nrs": _pain(), "experience-of-care": _experience()}


def questionnaire(qid: str) -> dict[str, Any]:
    """The Questionnaire resource ``qid``."""
    body = QUESTIONNAIRES[qid]
    out = {"resourceType": "Questionnaire", "id": qid, "url": _URL + qid, "version": "1.0",
           "name": body["name"], "title": body["title"], "status": "active",
           "subjectType": ["Patient"]}
    if "code" in body:
        out["code"] = body["code"]
    out["item"] = body["item"]
    return out


def _response(rid: str, qid: str, subject: dict[str, str], encounter: dict[str, str] | None,
              authored: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse", "id": rid, "questionnaire": _URL + qid,
        "status": "completed", "subject": subject}
    if encounter is not None:
        out["encounter"] = encounter
    out["authored"] = authored
    out["source"] = subject
    out["item"] = items
    return out


def phq9_response(rid: str, subject: dict[str, str], encounter: dict[str, str], authored: str,
                  answers: tuple[int, ...]) -> dict[str, Any]:
    """A completed PHQ-9 (labelled PSY: mental health information)."""
    items = [{"linkId": code, "text": text, "answer": [{"valueCoding": PHQ_ANSWERS[a]}]}
             for (code, text), a in zip(PHQ_ITEMS, answers, strict=True)]
    items.append({"linkId": "44261-6", "text": "Total score",
                  "answer": [{"valueInteger": sum(answers)}]})
    out = _response(rid, "phq-9", subject, encounter, authored, items)
    out["meta"] = PSY
    return out


def pain_response(rid: str, subject: dict[str, str], encounter: dict[str, str], authored: str,
                  score: int) -> dict[str, Any]:
    """A completed pain rating."""
    items = [{"linkId": "72514-3", "answer": [{"valueInteger": score}]}]
    return _response(rid, "pain-nrs", subject, encounter, authored, items)


def experience_response(rid: str, subject: dict[str, str], encounter: dict[str, str],
                        authored: str, answers: tuple[int, ...]) -> dict[str, Any]:
    """A completed experience-of-care survey."""
    items: list[dict[str, Any]] = [{"linkId": "rating", "answer": [{"valueInteger": answers[0]}]}]
    items += [{"linkId": link, "answer": [{"valueCoding": _AGREE[a - 1]}]}
              for (link, _), a in zip(_EXPERIENCE_ITEMS[1:], answers[1:], strict=True)]
    return _response(rid, "experience-of-care", subject, encounter, authored, items)


def sdoh_observations(chart_ids: list[str], subject: dict[str, str], encounter: dict[str, str],
                      when: str, answers: dict[str, Any]) -> list[dict[str, Any]]:
    """Social-needs screening answers, one Observation per question."""
    out = []
    for rid, (key, value) in zip(chart_ids, answers.items(), strict=True):
        obs = {"resourceType": "Observation", "id": rid, "status": "final",
               "category": codes.SDOH, "code": OBS[key], "subject": subject,
               "encounter": encounter, "effectiveDateTime": when}
        if isinstance(value, dict):
            obs["valueQuantity"] = value
        else:
            obs["valueCodeableConcept"] = {"coding": [codes.LA[value]]}
        out.append(obs)
    return out
