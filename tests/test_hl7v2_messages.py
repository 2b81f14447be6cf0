"""Real-looking HL7 v2 test messages, built field by field (imported by the test_hl7v2 tests)."""

from __future__ import annotations

SHARED_SAMPLES = "data/hl7v2"

FACILITY = "CITYHOSP^2.16.840.1.113883.19.5^ISO"
DR_CURIE = "1234^Curie^Marie^^^Dr^^^CITYHOSP&2.16.840.1.113883.19.5&ISO"
DR_HOUSE = "5678^House^Gregory^^^Dr"


def seg(segment_id: str, fields: dict[int, str]) -> str:
    """A segment with the given fields (1-based) and empty ones between."""
    return "|".join([segment_id] + [fields.get(i, "") for i in range(1, max(fields) + 1)])


def msh(kind: str, control: str, *, version: str = "2.5.1", sent: str = "20240315083000+0100",
        **extra: str) -> str:
    fields = {3: "EPIC", 4: FACILITY, 5: "HEALTHMESH", 6: "NODE", 7: sent, 9: kind,
              10: control, 11: "P", 12: version}
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return "MSH|^~\\&|" + "|".join(fields.get(i, "") for i in range(3, max(fields) + 1))


def message(*segments: str, sep: str = "\r") -> bytes:
    return sep.join(segments).encode("utf-8")


def pid(mrn: str = "MRN12345", **extra: str) -> str:
    fields = {1: "1", 3: f"{mrn}^^^CITYHOSP^MR~999887777^^^USSSA^SS",
              5: "O'Brien^Siobhán^Marie^^Dr^^L", 7: "19800229", 8: "F",
              11: "12 Rue de la Paix^Apt 4^Paris^^75002^FRA^H",
              13: "^PRN^PH^^33^1^23456789~^NET^Internet^siobhan@example.org",
              14: "^WPN^PH^^33^1^99999999", 16: "M^Married^HL70002"}
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return seg("PID", fields)


def pv1(visit: str = "V100", klass: str = "I", **extra: str) -> str:
    fields = {1: "1", 2: klass, 3: "WARD4^201^B^CITYHOSP", 7: DR_CURIE, 17: DR_HOUSE,
              19: f"{visit}^^^CITYHOSP^VN", 44: "20240315080000+0100"}
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return seg("PV1", fields)


def adt(event: str, control: str, *, patient: str | None = None, visit: str | None = None,
        **pv1_extra: str) -> bytes:
    segments = [msh(f"ADT^{event}^ADT_A01", control), seg("EVN", {1: event, 2: "20240315083000"}),
                patient or pid(), "ZPI|1|custom site data^not in any standard"]
    if visit is not None:
        segments.append(visit)
    elif event not in ("A28", "A31"):
        segments.append(pv1(**pv1_extra))
    return message(*segments)


def oru(control: str = "LAB0001", *, filler: str = "F9001", status: str = "F",
        glucose: str = "182", glucose_status: str = "F") -> bytes:
    """An ORU^R01 with 5 OBX: numeric, coded, text, structured numeric and escaped text."""
    return message(
        msh("ORU^R01^ORU_R01", control),
        pid(),
        pv1(),
        seg("ORC", {1: "RE", 2: "P5001^EPIC", 3: f"{filler}^LAB", 12: DR_HOUSE}),
        seg("OBR", {1: "1", 2: "P5001^EPIC", 3: f"{filler}^LAB",
                    4: "24323-8^Comprehensive metabolic panel^LN",
                    7: "20240315071500+0100", 22: "20240315093000+0100", 25: status}),
        seg("OBX", {1: "1", 2: "NM", 3: "2345-7^Glucose [Mass/volume] in Serum or Plasma^LN",
                    5: glucose, 6: "mg/dl", 7: "70-105", 8: "H", 11: glucose_status,
                    14: "20240315071500+0100", 16: DR_CURIE}),
        "NTE|1||Patient was not fasting",
        seg("OBX", {1: "2", 2: "CWE", 3: "5778-6^Color of Urine^LN",
                    5: "371244009^Yellow color^SCT", 11: "F"}),
        seg("OBX", {1: "3", 2: "ST", 3: "8251-1^Service comment^LN",
                    5: "Sample slightly haemolysed", 11: "F"}),
        seg("OBX", {1: "4", 2: "SN", 3: "1751-7^Albumin [Mass/volume] in Serum^LN",
                    5: "<^3.5", 6: "g/dL^^UCUM", 7: "3.5-5.2", 8: "L", 11: "F"}),
        seg("OBX", {1: "5", 2: "TX", 3: "18771-6^Microscopy^LN",
                    5: "Crystals\\.br\\Ca oxalate \\T\\ urate\\F\\none", 11: "F"}),
        "ZLB|1|lab private segment",
    )


def orm(control: str, order_control: str, *, placer: str = "PLC1001") -> bytes:
    return message(
        msh("ORM^O01^ORM_O01", control, version="2.3"),
        pid(),
        seg("PV1", {1: "1", 2: "O", 19: "V200^^^CITYHOSP^VN"}),
        seg("ORC", {1: order_control, 2: f"{placer}^EPIC", 9: "20240316101500+0100",
                    12: DR_HOUSE}),
        seg("OBR", {1: "1", 2: f"{placer}^EPIC", 4: "24323-8^Comprehensive metabolic panel^LN",
                    5: "S", 31: "R73.9^Hyperglycemia^I10"}),
        "NTE|1||Fasting sample please",
    )


def oml(control: str) -> bytes:
    return message(
        msh("OML^O21^OML_O21", control, version="2.6"),
        pid(),
        seg("ORC", {1: "NW", 2: "PLC2002^EPIC", 9: "20240317090000+0100", 12: DR_CURIE}),
        seg("TQ1", {1: "1", 9: "R"}),
        seg("OBR", {1: "1", 2: "PLC2002^EPIC", 4: "58410-2^CBC panel - Blood by Automated "
                                                   "count^LN", 5: "R"}),
        seg("SPM", {1: "1", 4: "119297000^Blood specimen^SCT"}),
    )


def vxu(control: str) -> bytes:
    return message(
        msh("VXU^V04^VXU_V04", control, version="2.5.1"),
        pid(),
        seg("ORC", {1: "RE", 2: "IZ-77^EPIC", 3: "IZ-77F^REGISTRY", 12: DR_HOUSE}),
        seg("RXA", {1: "0", 2: "1", 3: "20240110103000+0100", 5: "208^COVID-19 mRNA^CVX",
                    6: "0.3", 7: "mL^milliliter^UCUM", 9: "00^New immunization record^NIP001",
                    10: DR_CURIE, 15: "LOT42", 16: "20250101", 17: "PFR^Pfizer^MVX",
                    20: "CP", 21: "A"}),
        seg("RXR", {1: "C28161^Intramuscular^NCIT", 2: "LD^Left Deltoid^HL70163"}),
        seg("ORC", {1: "RE", 3: "IZ-78F^REGISTRY"}),
        seg("RXA", {1: "0", 2: "1", 3: "20230915", 5: "141^Influenza, seasonal^CVX", 6: "999",
                    9: "01^Historical information^NIP001", 18: "00^Parental decision^NIP002",
                    20: "RE"}),
    )
