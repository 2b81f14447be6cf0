"""Real FHIR clients (fhirpy, fhirclient) against a live ``healthmesh serve`` on loopback."""

from __future__ import annotations

import pytest
from fhirclient import client as fc_client
from fhirclient.models.observation import Observation as FcObservation
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

pytestmark = pytest.mark.xdist_group("live-server")


@pytest.fixture
def fhirpy_client(empty_server):  # type: ignore[no-untyped-def]
    return SyncFHIRClient(empty_server.base,
                          authorization=empty_server.clinician["Authorization"])


def test_fhirpy_create_read_update_delete(fhirpy_client: SyncFHIRClient) -> None:
    patient = fhirpy_client.resource(
        "Patient", name=[{"family": "Okafor", "given": ["Ada"]}], gender="female",
        birthDate="1980-02-29",
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    fetched = fhirpy_client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "Okafor"
    fetched["gender"] = "other"
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    found = fhirpy_client.resources("Patient").search(family="okaf", birthdate="1980").fetch()
    assert [p.id for p in found] == [patient.id]
    fetched.delete()
    with pytest.raises(ResourceNotFound):
        fhirpy_client.reference("Patient", patient.id).to_resource()


def test_fhirpy_rejects_invalid_resource_with_outcome(fhirpy_client: SyncFHIRClient) -> None:
    bad = fhirpy_client.resource("Observation", status="final")  # no code
    with pytest.raises(OperationOutcome) as info:
        bad.save()
    assert "Observation.code" in str(info.value)


def test_fhirpy_search_paging_and_count(fhirpy_client: SyncFHIRClient) -> None:
    for i in range(23):
        fhirpy_client.resource(
            "Observation", status="final", code={"coding": [{"system": "http://loinc.org",
                                                          "code": "8867-4"}]},
            valueQuantity={"value": 60 + i, "unit": "/min", "system": "http://unitsofmeasure.org",
                           "code": "/min"},
        ).save()
    search = fhirpy_client.resources("Observation").search(code="http://loinc.org|8867-4")
    assert search.count() == 23
    every = search.limit(5).fetch_all()
    assert len(every) == 23 and len({o.id for o in every}) == 23
    high = search.search(value_quantity="ge80").fetch_all()
    assert sorted(o["valueQuantity"]["value"] for o in high) == [80, 81, 82]


def test_fhirpy_against_synthea(server) -> None:  # type: ignore[no-untyped-def]
    client = SyncFHIRClient(server.base, authorization=server.clinician["Authorization"])
    patients = client.resources("Patient").fetch_all()
    assert len(patients) == 16
    some = patients[0]
    obs = client.resources("Observation").search(subject=f"Patient/{some.id}").fetch_all()
    assert obs and all(o["subject"]["reference"] == f"Patient/{some.id}" for o in obs)
    with_patient = (
        client.resources("Observation").search(patient=some.id).include("Observation", "subject")
        .limit(3).fetch_raw()
    )
    modes = {e["search"]["mode"] for e in with_patient["entry"]}
    assert modes == {"match", "include"}


def test_fhirclient_read_and_search(server) -> None:  # type: ignore[no-untyped-def]
    smart = fc_client.FHIRClient(settings={"app_id": "healthmesh-test", "api_base": server.base})
    smart.server.session.headers.update(server.clinician)
    search = FcPatient.where(struct={"gender": "female"})
    females = list(search.perform_resources_iter(smart.server))
    assert females and all(p.gender == "female" for p in females)
    first = females[0]
    again = FcPatient.read(first.id, smart.server)
    assert again.id == first.id and again.gender == "female"
    observations = list(FcObservation.where(
        struct={"subject": f"Patient/{first.id}", "_count": "5"}
    ).perform_resources_iter(smart.server))
    assert observations and all(o.subject.reference == f"Patient/{first.id}" for o in observations)


def test_fhirclient_create(empty_server) -> None:  # type: ignore[no-untyped-def]
    smart = fc_client.FHIRClient(settings={"app_id": "healthmesh-test",
                                           "api_base": empty_server.base})
    smart.server.session.headers.update(empty_server.clinician)
    patient = FcPatient({"name": [{"family": "Nakamura"}], "gender": "male"})
    response = patient.create(smart.server)
    assert response["resourceType"] == "Patient" and response["id"]
    assert FcPatient.read(response["id"], smart.server).name[0].family == "Nakamura"
