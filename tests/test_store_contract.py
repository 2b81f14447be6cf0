"""The Store contract: every backend must pass these tests (subclass StoreContract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from healthmesh.errors import Conflict
from healthmesh.fhir.search_query import parse_search
from healthmesh.store.sqlite import SQLiteStore


def patient(pid: str, family: str = "Smith", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}], **extra}


def observation(oid: str, patient_id: str, code: str, when: str = "2024-03-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
    }


def ids(page_or_list: Any) -> list[str]:
    items = getattr(page_or_list, "matches", page_or_list)
    return [s.id for s in items]


class StoreContract:
    """Subclasses provide a ``store`` fixture."""

    def search(self, store: Any, rtype: str, **params: str) -> list[str]:
        query = parse_search(rtype, [*params.items(), ("_count", "1000")])
        return ids(store.search(query))

    def test_create_read_and_meta(self, store: Any) -> None:
        result = store.put(patient("p1"))
        assert result.outcome == "created"
        stored = store.read("Patient", "p1")
        body = stored.resource()
        assert body["meta"]["versionId"] == "1"
        assert body["meta"]["lastUpdated"].endswith("Z")
        assert body["name"] == [{"family": "Smith"}]
        assert store.read("Patient", "nope") is None

    def test_update_bumps_version_only_on_change(self, store: Any) -> None:
        store.put(patient("p1"))
        assert store.put(patient("p1")).outcome == "unchanged"
        assert store.read("Patient", "p1").version == 1
        assert store.put(patient("p1", "Jones")).outcome == "updated"
        assert store.read("Patient", "p1").version == 2
        assert store.vread("Patient", "p1", 1).resource()["name"][0]["family"] == "Smith"
        assert store.vread("Patient", "p1", 2).resource()["name"][0]["family"] == "Jones"
        assert store.vread("Patient", "p1", 3) is None

    def test_if_match_conflict(self, store: Any) -> None:
        store.put(patient("p1"))
        with pytest.raises(Conflict):
            store.put(patient("p1", "X"), if_match=7)
        assert store.put(patient("p1", "X"), if_match=1).stored.version == 2

    def test_delete_then_history(self, store: Any) -> None:
        store.put(patient("p1"))
        store.put(patient("p1", "Jones"))
        assert store.delete("Patient", "p1").stored.version == 3
        assert store.read("Patient", "p1").deleted
        assert store.delete("Patient", "p1") is None
        methods = [(e.stored.version, e.method) for e in store.history("Patient", "p1")]
        assert methods == [(3, "DELETE"), (2, "PUT"), (1, "POST")]
        # re-create after delete
        assert store.put(patient("p1", "Back")).outcome == "created"
        assert store.read("Patient", "p1").version == 4

    def test_index_follows_current_version(self, store: Any) -> None:
        store.put(patient("p1", "Smith"))
        assert self.search(store, "Patient", family="smith") == ["p1"]
        store.put(patient("p1", "Jones"))
        assert self.search(store, "Patient", family="smith") == []
        assert self.search(store, "Patient", family="jon") == ["p1"]
        store.delete("Patient", "p1")
        assert self.search(store, "Patient", family="jon") == []

    def test_put_many_is_atomic(self, store: Any) -> None:
        good = patient("p1")
        bad = {"resourceType": "Patient"}  # no id: the store cannot write it
        with pytest.raises(KeyError):
            store.put_many([good, bad])
        assert store.read("Patient", "p1") is None
        assert self.search(store, "Patient", family="smith") == []

    def test_transaction_rolls_back_everything(self, store: Any) -> None:
        with pytest.raises(RuntimeError), store.transaction():
            store.put(patient("p1"))
            store.put(observation("o1", "p1", "1234-5"))
            raise RuntimeError("boom")
        assert store.read("Patient", "p1") is None
        assert store.read("Observation", "o1") is None
        assert self.search(store, "Observation", code="1234-5") == []

    def test_same_resource_twice_in_one_batch(self, store: Any) -> None:
        outcomes = store.put_many([patient("p1", "A"), patient("p1", "B")])
        assert outcomes == ["created", "updated"]
        assert self.search(store, "Patient", family="a") == []
        assert self.search(store, "Patient", family="b") == ["p1"]

    def test_patient_compartment(self, store: Any) -> None:
        store.put_many([patient("p1"), patient("p2"), observation("o1", "p1", "x"),
                        observation("o2", "p2", "x"), observation("o3", "p1", "y")])
        assert sorted(s.id for s in store.compartment("p1")) == ["o1", "o3"]
        assert store.read("Observation", "o1").patient == "p1"

    def test_counts(self, store: Any) -> None:
        store.put_many([patient("p1"), patient("p2"), observation("o1", "p1", "x")])
        store.delete("Patient", "p2")
        assert store.counts() == {"Patient": 1, "Observation": 1}

    def test_keyset_paging_is_stable_under_inserts_and_deletes(self, store: Any) -> None:
        store.put_many([patient(f"p{i:02d}") for i in range(10)])
        query = parse_search("Patient", [("_count", "4")])
        first = store.search(query)
        assert ids(first) == ["p00", "p01", "p02", "p03"]
        store.delete("Patient", "p01")  # before the cursor
        store.put(patient("p99"))  # new, after everything
        second = store.search(query, cursor=first.next_cursor)
        assert ids(second) == ["p04", "p05", "p06", "p07"]
        back = store.search(query, cursor=second.prev_cursor)
        assert ids(back) == ["p00", "p02", "p03"]

    def test_sorted_paging_uses_a_snapshot(self, store: Any) -> None:
        store.put_many([patient(f"p{i}", family=f"F{9 - i}") for i in range(6)])
        query = parse_search("Patient", [("_count", "2"), ("_sort", "family")])
        first = store.search(query)
        assert ids(first) == ["p5", "p4"]
        store.put(patient("p0", family="A0"))  # would now sort first
        second = store.search(query, cursor=first.next_cursor)
        assert ids(second) == ["p3", "p2"]

    def test_count_matches_search(self, store: Any) -> None:
        store.put_many([observation(f"o{i}", "p1", "a" if i % 3 else "b") for i in range(30)])
        query = parse_search("Observation", [("code", "a")])
        assert store.count(query) == 20
        assert len(list(store.stream(query))) == 20


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Any:
        s = SQLiteStore(tmp_path / "store.sqlite")
        yield s
        s.close()

    def test_reopen_keeps_data(self, tmp_path: Path) -> None:
        s = SQLiteStore(tmp_path / "s.sqlite")
        s.put(patient("p1"))
        s.close()
        again = SQLiteStore(tmp_path / "s.sqlite")
        assert again.read("Patient", "p1").version == 1
        assert ids(again.search(parse_search("Patient", [("family", "smi")]))) == ["p1"]
        again.close()


def test_two_processes_writing_one_store(tmp_path: Path) -> None:
    """A server and an ingest may write the same store: row ids must not collide."""
    first = SQLiteStore(tmp_path / "s.sqlite")
    second = SQLiteStore(tmp_path / "s.sqlite")
    first.put(patient("a1"))
    second.put(patient("b1"))
    first.put_many([patient("a2"), patient("a3")])
    second.put_many([patient("b2")])
    assert sorted(first.counts().items()) == [("Patient", 5)]
    found = ids(first.search(parse_search("Patient", [("_count", "10")])))
    assert found == ["a1", "b1", "a2", "a3", "b2"]
    first.close()
    second.close()
