"""HL7 v2 -> FHIR: each trigger event, the quirks of real feeds, broken input, idempotency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from healthmesh.hl7v2 import Hl7Intake, Receipt
from healthmesh.node import Node
from tests.test_hl7v2_messages import (
    adt,
    message,
    msh,
    oml,
    orm,
    oru,
    pid,
    pv1,
    seg,
    vxu,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    return make_node()


def take(node: Node, raw: bytes) -> Receipt:
    receipt = Hl7Intake(node).receive(raw)
    return receipt


def accepted(node: Node, raw: bytes) -> Receipt:
    receipt = take(node, raw)
    assert receipt.ack_code == "AA", receipt.reason
    return receipt


def find(node: Node, rtype: str, *params: tuple[str, str]) -> list[dict[str, Any]]:
    page = node.fhir.search(node.fhir.parse(rtype, list(params) + [("_count", "100")]))
    return [m.resource() for m in page.matches]


def one(node: Node, rtype: str, *params: tuple[str, str]) -> dict[str, Any]:
    found = find(node, rtype, *params)
    assert len(found) == 1, found
    return found[0]


def version(resource: dict[str, Any]) -> str:
    return str(resource["meta"]["versionId"])


# -- ADT ------------------------------------------------------------------------------


def test_a01_admission_makes_patient_encounter_practitioners_and_organization(node: Node) -> None:
    accepted(node, adt("A01", "ADT0001"))
    patient = one(node, "Patient", ("identifier", "MRN12345"))
    assert patient["name"] == [{"use": "official", "family": "O'Brien",
                                "given": ["Siobhán", "Marie"], "prefix": ["Dr"]}]
    assert patient["birthDate"] == "1980-02-29" and patient["gender"] == "female"
    assert {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999887777"}.items() <= \
        patient["identifier"][1].items()
    assert {"system": "email", "value": "siobhan@example.org", "use": "home"} in \
        patient["telecom"]
    assert {"system": "phone", "value": "(1) 99999999", "use": "work"} in patient["telecom"]
    assert patient["address"][0] == {"use": "home", "line": ["12 Rue de la Paix", "Apt 4"],
                                     "city": "Paris", "postalCode": "75002", "country": "FRA"}
    encounter = one(node, "Encounter", ("identifier", "V100"))
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert encounter["period"] == {"start": "2024-03-15T08:00:00+01:00"}
    roles = {p["type"][0]["coding"][0]["code"]: p["individual"]["display"]
             for p in encounter["participant"]}
    assert roles == {"ATND": "Marie Curie", "ADM": "Gregory House"}
    org = one(node, "Organization", ("name", "CITYHOSP"))
    assert org["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                  "value": "urn:oid:2.16.840.1.113883.19.5"}]
    assert encounter["serviceProvider"]["reference"] == f"Organization/{org['id']}"
    assert len(find(node, "Practitioner")) == 2


def test_a03_discharge_updates_the_same_encounter(node: Node) -> None:
    accepted(node, adt("A01", "ADT0001"))
    accepted(node, adt("A03", "ADT0002", p45="20240320110000+0100"))
    encounter = one(node, "Encounter", ("identifier", "V100"))
    assert encounter["status"] == "finished" and version(encounter) == "2"
    assert encounter["period"] == {"start": "2024-03-15T08:00:00+01:00",
                                   "end": "2024-03-20T11:00:00+01:00"}


def test_a04_registration_is_an_arrived_outpatient_visit(node: Node) -> None:
    accepted(node, adt("A04", "ADT0003", visit=pv1("V300", "O")))
    encounter = one(node, "Encounter", ("identifier", "V300"))
    assert (encounter["status"], encounter["class"]["code"]) == ("arrived", "AMB")


def test_a08_updates_demographics_in_place(node: Node) -> None:
    accepted(node, adt("A01", "ADT0001"))
    accepted(node, adt("A08", "ADT0004", patient=pid(p5="Murphy^Siobhán^^^Ms^^L")))
    patient = one(node, "Patient", ("identifier", "MRN12345"))
    assert patient["name"][0]["family"] == "Murphy" and version(patient) == "2"
    assert len(find(node, "Patient")) == 1


def test_a28_and_a31_are_person_events_without_a_visit(node: Node) -> None:
    accepted(node, adt("A28", "ADT0005", visit=seg("PV1", {1: "1", 2: "N"})))
    accepted(node, adt("A31", "ADT0006", patient=pid(p8="U")))
    assert one(node, "Patient", ("identifier", "MRN12345"))["gender"] == "unknown"
    assert find(node, "Encounter") == []


def test_a40_merge_links_both_patients_and_keeps_the_retired_record(node: Node) -> None:
    accepted(node, adt("A28", "ADT0007", patient=pid("MRN-OLD", p5="Old^Name")))
    merge = message(msh("ADT^A40^ADT_A39", "ADT0008"), seg("EVN", {1: "A40"}),
                    pid("MRN-NEW"), seg("MRG", {1: "MRN-OLD^^^CITYHOSP^MR"}))
    accepted(node, merge)
    old = one(node, "Patient", ("identifier", "MRN-OLD"))
    new = one(node, "Patient", ("identifier", "MRN-NEW"))
    assert old["active"] is False and old["name"][0]["family"] == "Old"
    assert old["link"] == [{"other": {"reference": f"Patient/{new['id']}"},
                            "type": "replaced-by"}]
    assert new["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]
    assert new["active"] is True


def test_a40_without_mrg_is_an_application_error(node: Node) -> None:
    receipt = take(node, message(msh("ADT^A40", "ADT0009"), pid("MRN-NEW")))
    assert receipt.ack_code == "AE" and receipt.error is not None
    assert receipt.error.location == "MRG-1"


# -- ORU --------------------------------------------------------------------------------


def test_oru_report_with_numeric_coded_text_and_structured_results(node: Node) -> None:
    accepted(node, oru())
    report = one(node, "DiagnosticReport", ("code", f"{LOINC}|24323-8"))
    assert report["status"] == "final" and len(report["result"]) == 5
    assert report["effectiveDateTime"] == "2024-03-15T07:15:00+01:00"
    glucose = one(node, "Observation", ("code", f"{LOINC}|2345-7"))
    assert glucose["valueQuantity"] == {"value": 182, "unit": "mg/dl", "system": UCUM,
                                        "code": "mg/dL"}
    assert glucose["referenceRange"][0]["low"]["value"] == 70
    assert glucose["referenceRange"][0]["high"]["code"] == "mg/dL"
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["note"] == [{"text": "Patient was not fasting"}]
    assert glucose["performer"][0]["display"] == "Marie Curie"
    color = one(node, "Observation", ("code", f"{LOINC}|5778-6"))
    assert color["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct", "code": "371244009", "display": "Yellow color"}
    comment = one(node, "Observation", ("code", f"{LOINC}|8251-1"))
    assert comment["valueString"] == "Sample slightly haemolysed"
    albumin = one(node, "Observation", ("code", f"{LOINC}|1751-7"))
    assert albumin["valueQuantity"] == {"value": 3.5, "comparator": "<", "unit": "g/dL",
                                        "system": UCUM, "code": "g/dL"}
    microscopy = one(node, "Observation", ("code", f"{LOINC}|18771-6"))
    assert microscopy["valueString"] == "Crystals\nCa oxalate & urate|none"
    patient = one(node, "Patient", ("identifier", "MRN12345"))
    assert glucose["subject"]["reference"] == f"Patient/{patient['id']}"


def test_oru_does_not_overwrite_demographics_from_adt(node: Node) -> None:
    accepted(node, adt("A01", "ADT0001"))
    sparse = oru().replace(pid().encode(), seg("PID", {3: "MRN12345^^^CITYHOSP^MR",
                                                       5: "OBRIEN^S"}).encode())
    accepted(node, sparse)
    patient = one(node, "Patient", ("identifier", "MRN12345"))
    assert patient["name"][0]["family"] == "O'Brien" and version(patient) == "1"


def test_a_corrected_result_updates_the_same_observation(node: Node) -> None:
    accepted(node, oru("LAB0001"))
    accepted(node, oru("LAB0002", glucose="95", glucose_status="C", status="C"))
    glucose = one(node, "Observation", ("code", f"{LOINC}|2345-7"))
    assert glucose["status"] == "corrected" and glucose["valueQuantity"]["value"] == 95
    assert version(glucose) == "2"
    assert len(find(node, "Observation")) == 5


def test_lab_sample_messages_convert(node: Node, shared: Path) -> None:
    samples = shared / "data/hl7v2/microsoft-fhir-converter"
    accepted(node, (samples / "LRI_2.0-NG_CBC_Typ_Message.hl7").read_bytes())
    # OBX|18|NM|26499-4^Neutrophils...||58|10*3/uL^thousand per microliter^UCUM|1.5 to 7.0|HH
    neutrophils = one(node, "Observation", ("code", f"{LOINC}|26499-4"))
    assert neutrophils["valueQuantity"] == {"value": 58, "unit": "10*3/uL", "system": UCUM,
                                            "code": "10*3/uL"}
    assert neutrophils["referenceRange"][0]["low"]["value"] == 1.5
    assert neutrophils["interpretation"][0]["coding"][0]["code"] == "HH"


# -- orders and immunizations ------------------------------------------------------------


def test_orm_new_order_then_cancel(node: Node) -> None:
    accepted(node, orm("ORD0001", "NW"))
    request = one(node, "ServiceRequest", ("code", f"{LOINC}|24323-8"))
    assert (request["status"], request["intent"], request["priority"]) == (
        "active", "order", "stat")
    assert request["authoredOn"] == "2024-03-16T10:15:00+01:00"
    assert request["requester"]["display"] == "Gregory House"
    assert request["reasonCode"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert request["note"] == [{"text": "Fasting sample please"}]
    accepted(node, orm("ORD0002", "CA"))
    cancelled = one(node, "ServiceRequest", ("code", f"{LOINC}|24323-8"))
    assert cancelled["status"] == "revoked" and version(cancelled) == "2"


def test_oml_order(node: Node) -> None:
    accepted(node, oml("ORD0003"))
    request = one(node, "ServiceRequest", ("code", f"{LOINC}|58410-2"))
    assert request["status"] == "active" and request["priority"] == "routine"
    assert request["identifier"][0]["value"] == "PLC2002"


def test_vxu_immunizations(node: Node) -> None:
    accepted(node, vxu("IMM0001"))
    covid = one(node, "Immunization", ("vaccine-code", "http://hl7.org/fhir/sid/cvx|208"))
    assert covid["status"] == "completed" and covid["primarySource"] is True
    assert covid["occurrenceDateTime"] == "2024-01-10T10:30:00+01:00"
    assert covid["doseQuantity"] == {"value": 0.3, "unit": "milliliter", "system": UCUM,
                                     "code": "mL"}
    assert (covid["lotNumber"], covid["expirationDate"]) == ("LOT42", "2025-01-01")
    assert covid["site"]["coding"][0]["code"] == "LD"
    assert covid["manufacturer"]["display"] == "Pfizer"
    flu = one(node, "Immunization", ("vaccine-code", "http://hl7.org/fhir/sid/cvx|141"))
    assert flu["status"] == "not-done" and flu["occurrenceDateTime"] == "2023-09-15"
    assert "doseQuantity" not in flu and flu["primarySource"] is False
    assert flu["statusReason"]["text"] == "Parental decision"


def test_vxu_sample(node: Node, shared: Path) -> None:
    accepted(node, (shared / "data/hl7v2/microsoft-fhir-converter/VXU.hl7").read_bytes())
    # RXA|0|1|20150624||49281-0215-88^TENIVAC^NDC|0.5|mL^mL^UCUM||00^New Record^NIP001|...
    tenivac = one(node, "Immunization", ("vaccine-code", "http://hl7.org/fhir/sid/ndc|"
                                                         "49281-0215-88"))
    assert tenivac["lotNumber"] == "315841" and tenivac["doseQuantity"]["value"] == 0.5
    assert len(find(node, "Immunization")) == 3


# -- quirks of real feeds ------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(node: Node, sep: str) -> None:
    raw = adt("A01", "ADT0001").replace(b"\r", sep.encode())
    accepted(node, raw + sep.encode() * 2)
    assert one(node, "Patient", ("identifier", "MRN12345"))["name"][0]["given"][0] == "Siobhán"


def test_byte_order_mark_and_latin1_declared_in_msh18(node: Node) -> None:
    accepted(node, b"\xef\xbb\xbf" + adt("A28", "ADT0010"))
    latin = message(msh("ADT^A28", "ADT0011", m18="8859/1"), pid("MRN-L", p5="Müller^Zoë"))
    accepted(node, latin.decode("utf-8").encode("latin-1"))
    patient = one(node, "Patient", ("identifier", "MRN-L"))
    assert patient["name"][0] == {"family": "Müller", "given": ["Zoë"]}


def test_versions_23_to_28(node: Node) -> None:
    for number, version_id in enumerate(["2.3", "2.3.1", "2.4", "2.5", "2.6", "2.7.1", "2.8"]):
        raw = message(msh("ADT^A28", f"V{number}", version=version_id), pid(f"MRN-V{number}"))
        accepted(node, raw)
    assert len(find(node, "Patient")) == 7


def test_shared_samples_all_parse_and_convert_or_name_their_problem(node: Node,
                                                                    shared: Path) -> None:
    from healthmesh.hl7v2 import split_messages
    from healthmesh.hl7v2.message import RawMessage

    results = {}
    for path in sorted((shared / "data/hl7v2").rglob("*.hl7")):
        with path.open("rb") as handle:
            for item in split_messages(handle, 1 << 20):
                assert isinstance(item, RawMessage), item
                results[path.name] = take(node, item.data)
    assert len(results) == 20
    rejected = {name: (r.ack_code, r.error.location if r.error else None)
                for name, r in results.items() if r.ack_code != "AA"}
    # ORU-R01-01: 'OBX||ED|||App5^NS^...' has no OBX-3; the GHH glucose PID-7 is 196203520
    assert rejected == {"ORU-R01-01.hl7": ("AE", "OBX-3"),
                        "ORU-R01-GHH-LAB-glucose-v2.4.hl7": ("AE", "PID-7")}


# -- broken input ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "ack", "location", "words"), [
    (b"hello world", "AR", "MSH", "does not start with an MSH"),
    (b"", "AR", "MSH", "does not start with an MSH"),
    (b"MSH|^~\\&|EPIC|CITYHOSP|", "AR", "MSH-9", "MSH-9 message type is empty"),
    (message(msh("ADT^A01", "")), "AR", "MSH-10", "control id is empty"),
    (message(msh("ADT^A01", "X1", version="2.2"), pid()), "AR", "MSH-12", "2.2 is not supported"),
    (message(msh("SIU^S12", "X2"), pid()), "AR", "MSH-9", "SIU is not supported"),
    (message(msh("ADT^A02", "X3"), pid()), "AR", "MSH-9", "ADT^A02 is not supported"),
    (message(msh("ADT^A01", "X4"), "PID|1||"), "AE", "PID-3", "no patient identifier"),
    (message(msh("ADT^A01", "X5"), pid(p7="19801345")), "AE", "PID-7", "'19801345'"),
    (message(msh("ADT^A01", "X6"), pid(), pv1(p44="2024-03-15")), "AE", "PV1-44", "2024-03-15"),
    (message(msh("ADT^A01", "X7"), pid(), "pv1|1|I"), "AR", "segment 3", "segment id"),
    (message(msh("ORU^R01", "X8"), pid(), seg("OBR", {4: "1^a^LN"}),
             seg("OBX", {2: "NM", 3: "2345-7^Glucose^LN", 5: "high"})), "AE", "OBX-5",
     "'high'"),
    (message(msh("ORU^R01", "X9"), seg("OBR", {4: "1^a^LN"})), "AE", "PID", "before any PID"),
    (message(msh("ADT^A01", "X10", m18="EBCDIC"), pid()), "AR", "MSH-18", "'EBCDIC'"),
    (message(msh("ADT", "X11"), pid()), "AR", "MSH-9", "event '' (MSH-9.2, else EVN-1)"),
])
def test_broken_messages_are_refused_with_the_reason(node: Node, raw: bytes, ack: str,
                                                     location: str, words: str) -> None:
    receipt = take(node, raw)
    assert receipt.ack_code == ack and receipt.error is not None
    assert receipt.error.location == location
    assert words in receipt.error.message
    assert node.store.counts() == {}


def test_adt_event_read_from_evn_when_msh9_has_none(node: Node) -> None:
    accepted(node, message(msh("ADT", "EVN0001"), seg("EVN", {1: "A04"}), pid(),
                           pv1("V400", "O")))
    assert one(node, "Encounter", ("identifier", "V400"))["status"] == "arrived"


def test_a_store_failure_is_an_application_error(node: Node,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from healthmesh.store.sqlite import StoreError

    def fail(*_: object) -> None:
        raise StoreError("database or disk is full")

    monkeypatch.setattr(node.store, "put_prepared", fail)
    receipt = take(node, oru())
    assert receipt.ack_code == "AE" and "disk is full" in (receipt.reason or "")


def test_wrong_encoding_without_msh18_is_refused(node: Node) -> None:
    raw = message(msh("ADT^A28", "ENC1"), pid(p5="Müller^Zoë")).decode().encode("latin-1")
    receipt = take(node, raw)
    assert receipt.ack_code == "AR" and "not valid utf-8" in (receipt.reason or "")
    assert "0xFC" in (receipt.reason or "")  # ü in Latin-1


def test_truncated_message_is_refused_whole(node: Node) -> None:
    full = oru()
    cut = full[: full.index(b"OBX|4") + len(b"OBX|4|SN|")]  # cut before OBX-3 of result 4
    receipt = take(node, cut)
    assert receipt.ack_code == "AE"
    assert node.store.counts() == {}  # nothing of the message was stored


# -- idempotency -------------------------------------------------------------------------------


def test_an_exact_duplicate_is_acknowledged_without_a_new_version(node: Node) -> None:
    first = accepted(node, oru())
    second = accepted(node, oru())
    assert not first.duplicate and second.duplicate and second.outcomes == {}
    assert all(version(o) == "1" for o in find(node, "Observation"))
    assert len(find(node, "Provenance")) == 1


def test_same_content_under_a_new_control_id_changes_nothing_but_provenance(node: Node) -> None:
    accepted(node, oru("LAB0001"))
    again = accepted(node, oru("LAB0099"))
    # the report and its 5 results are unchanged; patient, visit, organisation and
    # practitioners are only created when absent, so not written at all; a new Provenance
    assert again.outcomes == {"unchanged": 6, "created": 1}
    assert len(find(node, "Observation")) == 5 and len(find(node, "Provenance")) == 2


def test_provenance_names_the_message_and_what_it_wrote(node: Node) -> None:
    receipt = accepted(node, oru("LAB0001"))
    provenance = one(node, "Provenance")
    assert provenance["entity"][0]["what"]["identifier"]["value"] == "LAB0001"
    targets = {t["reference"] for t in provenance["target"]}
    assert targets == {r for r in receipt.resources if not r.startswith("Provenance/")}
    assert provenance["recorded"] == "2024-03-15T08:30:00+01:00"


# -- data types ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2024", "2024"),
    ("202403", "2024-03"),
    ("20240315", "2024-03-15"),
    ("202403150830", "2024-03-15T08:30:00+00:00"),
    ("20240315083012.1234-0500", "2024-03-15T08:30:12.1234-05:00"),
    ("20240229", "2024-02-29"),
])
def test_hl7_times_keep_their_precision(value: str, expected: str) -> None:
    from datetime import UTC

    from healthmesh.hl7v2.datatypes import date_time

    assert date_time(value, "OBX-14", UTC) == expected


@pytest.mark.parametrize("value", ["20230229", "2024031", "20240315256000", "20240315+2500",
                                   "yesterday"])
def test_impossible_times_are_refused(value: str) -> None:
    from datetime import UTC

    from healthmesh.hl7v2 import ConversionError
    from healthmesh.hl7v2.datatypes import date_time

    with pytest.raises(ConversionError, match="OBX-14"):
        date_time(value, "OBX-14", UTC)


def test_times_without_offset_use_the_node_time_zone(make_node: Callable[..., Node]) -> None:
    node = make_node(hl7v2_timezone="Europe/Paris")
    winter = pv1("V1", p44="20240315080000")
    summer = pv1("V2", p44="20240715080000")
    accepted(node, message(msh("ADT^A01", "TZ1"), pid(), winter))
    accepted(node, message(msh("ADT^A01", "TZ2"), pid(), summer))
    starts = sorted(e["period"]["start"] for e in find(node, "Encounter"))
    assert starts == ["2024-03-15T08:00:00+01:00", "2024-07-15T08:00:00+02:00"]


def test_an_unknown_time_zone_setting_is_a_config_error(make_node: Callable[..., Node]) -> None:
    from healthmesh.errors import ConfigError

    node = make_node(hl7v2_timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="hl7v2_timezone"):
        Hl7Intake(node)


@pytest.mark.parametrize(("text", "expected"), [
    (">60", {"low": {"value": 60, "unit": "mL/min"}, "text": ">60"}),
    ("negative", {"text": "negative"}),
    ("10-2", {"text": "10-2"}),  # low above high: kept as text, not guessed
])
def test_reference_ranges(text: str, expected: dict[str, Any]) -> None:
    from healthmesh.hl7v2.units import reference_range

    assert reference_range(text, "mL/min", "") == {
        k: ({**v, "system": UCUM, "code": "mL/min"} if isinstance(v, dict) else v)
        for k, v in expected.items()}


def test_units_outside_the_table_keep_their_text_only() -> None:
    from healthmesh.hl7v2.units import quantity

    assert quantity(3, "furlongs/fortnight", "") == {"value": 3, "unit": "furlongs/fortnight"}
    assert quantity(3, "K/uL", "")["code"] == "10*3/uL"
    assert quantity(3, "mmHg", "")["code"] == "mm[Hg]"
