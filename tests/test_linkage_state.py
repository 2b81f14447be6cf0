"""Linking synthetic sites: quality against the truth, encodings files, secrets, and the
linkage unit's state (incremental linking, steward splits and merges, audit trail)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson
import pytest

from healthmesh.linkage import (
    DEFAULT_THRESHOLD,
    EncodingFileError,
    LinkageState,
    LinkageStateError,
    Reject,
    SecretError,
    SiteEncodings,
    candidate_pairs,
    create_secret,
    default_schema,
    encode_patients,
    link_sites,
    pairwise_quality,
    read_encodings,
    read_patient_ndjson,
    read_secret,
    read_truth,
    write_encodings,
)
from healthmesh.synth import generate

SECRET = bytes(range(100, 132))
SITES = ("hospital", "clinic", "insurer")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "pop"
    generate(out, patients=400, sites=list(SITES), seed=21)
    return out


@pytest.fixture(scope="module")
def encoded(population: Path) -> dict[str, SiteEncodings]:
    schema = default_schema()
    sites = {}
    for site in SITES:
        rejects: list[Reject] = []
        enc = encode_patients(read_patient_ndjson(population / site / "Patient.ndjson", rejects),
                              schema, SECRET, rejects)
        enc.site = site
        assert rejects == []
        sites[site] = enc
    return sites


def _assigned(sites: list[SiteEncodings], clusters: list) -> dict[tuple[str, str], str]:
    return {(sites[i].site, sites[i].ids[k]): str(n)
            for n, cluster in enumerate(clusters) for i, k in cluster}


def test_default_settings_reach_the_quality_target(population: Path,
                                                   encoded: dict[str, SiteEncodings]) -> None:
    sites = list(encoded.values())
    truth = read_truth(population / "truth" / "linkage.csv")
    quality = pairwise_quality(_assigned(sites, link_sites(sites, DEFAULT_THRESHOLD)), truth)
    assert quality.f1 >= 0.97, quality.as_dict()
    assert quality.precision >= 0.97 and quality.recall >= 0.95


def test_blocking_keeps_nearly_every_link_all_pairs_would_find(
        encoded: dict[str, SiteEncodings]) -> None:
    sites = list(encoded.values())
    full = {frozenset(c) for c in link_sites(sites, 0.7, blocking="none") if len(c) > 1}
    blocked = {frozenset(c) for c in link_sites(sites, 0.7, blocking="keys") if len(c) > 1}
    assert len(full & blocked) >= 0.97 * len(full)


def test_without_blocking_keys_lsh_on_the_clks_still_links(population: Path) -> None:
    rejects: list[Reject] = []
    sites = []
    for site in SITES[:2]:
        enc = encode_patients(read_patient_ndjson(population / site / "Patient.ndjson", rejects),
                              default_schema(), SECRET, rejects, blocking_keys=False)
        assert all(keys == [] for keys in enc.blocks)
        enc.site = site
        sites.append(enc)
    assert all(len(c) == 1 for c in link_sites(sites, 0.7, blocking="keys"))  # nothing shared
    truth = read_truth(population / "truth" / "linkage.csv")
    assert pairwise_quality(_assigned(sites, link_sites(sites, 0.7, "lsh")), truth).f1 >= 0.95


def test_encodings_file_round_trip_and_rejects(tmp_path: Path,
                                               encoded: dict[str, SiteEncodings]) -> None:
    schema = default_schema()
    path = tmp_path / "enc.json"
    write_encodings(path, encoded["clinic"], schema)
    assert (path.stat().st_mode & 0o777) == 0o600
    document = orjson.loads(path.read_bytes())
    assert set(document) == {"format", "site", "schema", "l", "blocking", "count", "records"}
    assert set(document["records"][0]) == {"id", "clk", "blocks"}  # nothing else leaves
    document["records"][0]["clk"] = base64.b64encode(b"short").decode()
    document["records"][1]["id"] = "bad id with spaces"
    document["records"][2]["blocks"] = ["x"]
    document["records"][3] = "not an object"
    document["records"].append(dict(document["records"][4]))  # duplicate id
    path.write_bytes(orjson.dumps(document))
    rejects: list[Reject] = []
    back, fingerprint = read_encodings(path, rejects, schema.fingerprint)
    assert fingerprint == schema.fingerprint
    assert len(back.ids) == len(encoded["clinic"].ids) - 4 and len(rejects) == 5
    assert any("expected 128" in r.reason for r in rejects)
    assert any("duplicate" in r.reason for r in rejects)
    assert back.ids[0] == encoded["clinic"].ids[4]
    assert back.clks[0].tobytes() == encoded["clinic"].clks[4].tobytes()
    assert back.blocks[0] == encoded["clinic"].blocks[4]


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not JSON"),
    (b'{"format": "other"}', "not a healthmesh-clk/1"),
    (b'{"format": "healthmesh-clk/1", "site": "../etc", "l": 1024, "schema": "s", '
     b'"records": []}', "invalid site"),
    (b'{"format": "healthmesh-clk/1", "site": "a", "l": 1000, "schema": "s", "records": []}',
     "multiple of 64"),
    (b'{"format": "healthmesh-clk/1", "site": "a", "l": 1024, "schema": "other", '
     b'"records": []}', "re-encode"),
    (b'{"format": "healthmesh-clk/1", "site": "a", "l": 1024, "schema": "s", "records": {}}',
     "must be a list"),
])
def test_unusable_encodings_files_are_refused(tmp_path: Path, content: bytes,
                                              message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(EncodingFileError, match=message):
        read_encodings(path, [], schema="s" if b'"other"' not in content else "s")
    with pytest.raises(EncodingFileError, match="over the limit"):
        read_encodings(path, [], max_bytes=3)
    with pytest.raises(EncodingFileError, match="cannot read"):
        read_encodings(tmp_path / "missing.json", [])


def test_patient_ndjson_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    good = {"resourceType": "Patient", "id": "a1", "name": [{"family": "Doe"}]}
    path.write_bytes(b"\n".join([orjson.dumps(good), b"{broken", b'{"resourceType": "Obs"}',
                                 b"x" * (1 << 20 + 1), orjson.dumps({**good, "id": "a1"}),
                                 orjson.dumps({**good, "id": "bad id!"})]))
    rejects: list[Reject] = []
    enc = encode_patients(read_patient_ndjson(path, rejects), default_schema(), SECRET, rejects)
    assert enc.ids == ["a1"]
    reasons = " | ".join(r.reason for r in rejects)
    for expected in ("not JSON", "not a Patient", "longer than", "duplicate", "valid id"):
        assert expected in reasons


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "s.key"
    create_secret(path)
    assert (path.stat().st_mode & 0o777) == 0o600 and len(read_secret(path)) == 32
    with pytest.raises(SecretError, match="already exists"):
        create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="other users"):
        read_secret(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(SecretError, match="at least 32"):
        read_secret(short)
    with pytest.raises(SecretError, match="cannot read"):
        read_secret(tmp_path / "none.key")
    with pytest.raises(SecretError, match="regular file"):
        read_secret(tmp_path)


def _people(state: LinkageState, site: str) -> dict[str, str]:
    return dict(state.link_table(site))


def test_incremental_linking_joins_existing_people(tmp_path: Path, population: Path,
                                                   encoded: dict[str, SiteEncodings]) -> None:
    schema = default_schema().fingerprint
    truth = read_truth(population / "truth" / "linkage.csv")
    with LinkageState(tmp_path / "state.sqlite") as state:
        state.add(encoded["hospital"], schema)
        state.add(encoded["insurer"], schema)
        first = state.link()
        before = {s: _people(state, s) for s in ("hospital", "insurer")}
        assert first["new_records"] == len(encoded["hospital"].ids) + len(encoded["insurer"].ids)
        assert state.add(encoded["insurer"], schema) == {
            "added": 0, "updated": 0, "unchanged": len(encoded["insurer"].ids)}
        state.add(encoded["clinic"], schema)
        second = state.link()
        after = {s: _people(state, s) for s in SITES}
        assigned = {(s, rid): p for s, table in after.items() for rid, p in table.items()}
    assert second["new_records"] == len(encoded["clinic"].ids) and second["joined"] > 0
    # only pairs with a clinic record were scored: hospital × insurer was not redone
    expected = sum(len(candidate_pairs(encoded["clinic"].blocks, encoded[other].blocks)[0])
                   for other in ("hospital", "insurer"))
    assert second["compared"] == expected
    assert second["joined"] + second["new_people"] <= len(encoded["clinic"].ids)
    assert all(after[s] == before[s] for s in before)  # earlier links untouched
    assert pairwise_quality(assigned, truth).f1 >= 0.97


def test_steward_split_and_merge_are_audited(tmp_path: Path,
                                             encoded: dict[str, SiteEncodings]) -> None:
    schema = default_schema().fingerprint
    with LinkageState(tmp_path / "state.sqlite") as state:
        state.add(encoded["hospital"], schema)
        state.add(encoded["clinic"], schema)
        state.link()
        table = _people(state, "hospital")
        clinic = _people(state, "clinic")
        linked = next(rid for rid, p in table.items() if p in set(clinic.values()))
        old = table[linked]
        new = state.split("hospital", linked, "steward:ann", "different birth records")
        assert _people(state, "hospital")[linked] == new != old
        state.link()  # a new run does not undo the steward's split
        assert _people(state, "hospital")[linked] == new
        with pytest.raises(LinkageStateError, match="same site|from \\["):
            other = next(p for rid, p in table.items() if rid != linked)
            state.merge(new, other, "steward:ann", "test")
        assert state.merge(old, new, "steward:bob", "same person after all") == 1
        assert _people(state, "hospital")[linked] == old
        with pytest.raises(LinkageStateError, match="reason"):
            state.split("hospital", linked, "steward:ann", " ")
        with pytest.raises(LinkageStateError, match="no record"):
            state.split("hospital", "nope", "steward:ann", "x")
        with pytest.raises(LinkageStateError, match="two different"):
            state.merge(old, old, "steward:ann", "x")
        trail = state.audit_trail()
    assert [e["action"] for e in trail] == ["link", "split", "link", "merge"]
    assert trail[1]["actor"] == "steward:ann" and trail[1]["detail"]["from"] == old
    assert trail[3]["reason"] == "same person after all"


def test_state_refuses_another_schema_and_bad_threshold(tmp_path: Path,
                                                        encoded: dict[str, SiteEncodings]) -> None:
    with LinkageState(tmp_path / "state.sqlite") as state:
        state.add(encoded["hospital"], "a" * 64)
        with pytest.raises(LinkageStateError, match="schema"):
            state.add(encoded["clinic"], "b" * 64)
        with pytest.raises(LinkageStateError, match="threshold"):
            state.link(threshold=1.5)
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(LinkageStateError, match="cannot open"):
        LinkageState(tmp_path / "dir.sqlite")
