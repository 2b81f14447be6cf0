"""Record linkage core: clkhash-v3 schemas and CLKs, Patient features, Dice, blocking,
matching and quality measures — expected values worked out by hand or by clkhash."""

from __future__ import annotations

import copy
import hashlib
import hmac
import struct

import numpy as np
import pytest

from healthmesh.linkage import (
    ClkEncoder,
    LinkageSchemaError,
    candidate_pairs,
    default_schema,
    derive_keys,
    dice,
    greedy_clusters,
    pairwise_quality,
    parse_schema,
    patient_features,
)
from healthmesh.linkage.clk import xor_fold
from healthmesh.linkage.features import name_root, normalise_name
from healthmesh.linkage.matching import SitePairScores
from healthmesh.linkage.similarity import Scored, dense_candidates, popcounts, score_pairs

SECRET = b"0123456789abcdef0123456789abcdef"


def _schema(features: list[dict], l: int = 64, **config: object) -> dict:  # noqa: E741
    return {"version": 3, "clkConfig": {"l": l, "kdf": {"type": "HKDF"}, **config},
            "features": features}


def _feature(ident: str, comparison: dict, strategy: dict, hash_type: str = "blakeHash",
             fmt: dict | None = None, **hashing: object) -> dict:
    return {"identifier": ident, "format": fmt or {"type": "string"},
            "hashing": {"comparison": comparison, "strategy": strategy,
                        "hash": {"type": hash_type}, **hashing}}


# --- tokenising and strategies ------------------------------------------------------------

def test_ngram_exact_and_positional_tokens() -> None:
    schema = parse_schema(_schema([
        _feature("a", {"type": "ngram", "n": 2}, {"bitsPerToken": 1}),
        _feature("b", {"type": "ngram", "n": 1, "positional": True}, {"bitsPerToken": 1}),
        _feature("c", {"type": "exact"}, {"bitsPerToken": 1})]))
    a, b, c = (f.comparison for f in schema.features)
    assert a.tokenize("clkhash") == [" c", "cl", "lk", "kh", "ha", "as", "sh", "h "]
    assert b.tokenize("222") == ["1 2", "2 2", "3 2"]
    assert c.tokenize("02148") == ["02148"]
    assert a.tokenize("") == [] and c.tokenize("") == []


def test_numeric_tokens_follow_the_documented_example() -> None:
    # clkhash's docs: threshold 8, resolution 2 → x=25 quantised to 26, tokens 88..120
    schema = parse_schema(_schema([_feature(
        "n", {"type": "numeric", "thresholdDistance": 8, "resolution": 2},
        {"bitsPerToken": 1}, fmt={"type": "integer"})]))
    assert schema.features[0].comparison.tokenize("25") == ["88", "96", "104", "112", "120"]


def test_bits_per_feature_spreads_the_remainder_over_the_first_tokens() -> None:
    schema = parse_schema(_schema([_feature("a", {"type": "exact"}, {"bitsPerFeature": 10})]))
    assert schema.features[0].bits_per_token(3) == [4, 3, 3]
    assert schema.features[0].bits_per_token(10) == [1] * 10


# --- keys and hashing -------------------------------------------------------------------

def _hkdf_by_hand(secret: bytes, length: int) -> bytes:
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()  # RFC 5869, no salt
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_keys_are_hkdf_output_cut_into_pairs_in_feature_order() -> None:
    schema = parse_schema(_schema([_feature("a", {"type": "exact"}, {"bitsPerToken": 1}),
                                   _feature("b", {"type": "exact"}, {"bitsPerToken": 1})]))
    material = _hkdf_by_hand(SECRET, 4 * 64)
    assert derive_keys(schema, SECRET) == [(material[:64], material[64:128]),
                                           (material[128:192], material[192:256])]


def test_blake_and_double_hash_indices_by_hand() -> None:
    schema = parse_schema(_schema([
        _feature("a", {"type": "exact"}, {"bitsPerToken": 3}),
        _feature("b", {"type": "exact"}, {"bitsPerToken": 4}, hash_type="doubleHash")]))
    encoder = ClkEncoder(schema, SECRET)
    (ka, _), (kb1, kb2) = derive_keys(schema, SECRET)
    shorts = struct.unpack("<32H", hashlib.blake2b(b"x", key=ka, salt=b"0").digest())
    blake = {s % 64 for s in shorts[:3]}
    h1 = int(hmac.new(kb1, b"y", hashlib.sha1).hexdigest(), 16) % 64
    h2 = int(hmac.new(kb2, b"y", hashlib.md5).hexdigest(), 16) % 64
    double = {(h1 + i * h2) % 64 for i in range(4)}
    assert encoder.indices(["x", ""]) == blake
    assert encoder.indices(["", "y"]) == double
    assert encoder.indices(["x", "y"]) == blake | double


def test_clks_match_vectors_computed_by_clkhash() -> None:
    # clkhash 0.18.3 (generate_clks) on this schema, secret and these records
    schema = parse_schema(_schema([
        _feature("name", {"type": "ngram", "n": 2}, {"bitsPerToken": 3}),
        _feature("dob", {"type": "exact"}, {"bitsPerToken": 4}, hash_type="doubleHash",
                 fmt={"type": "date", "format": "%Y-%m-%d"}, missingValue={"sentinel": ""})]))
    encoder = ClkEncoder(schema, SECRET)
    assert encoder.encode(["anna", "1980-02-29"]).hex() == "001c4a42400a0510"
    assert encoder.encode(["", "1980-02-29"]).hex() == "0000080040020010"
    assert encoder.encode(["anna", ""]).hex() == "001c424200080510"


def test_bit_order_and_xor_folding() -> None:
    schema = parse_schema(_schema([_feature("a", {"type": "exact"}, {"bitsPerToken": 2})]))
    encoder = ClkEncoder(schema, SECRET)
    clk = encoder.encode(["token"])
    expected = bytearray(8)
    for i in encoder.indices(["token"]):
        expected[i // 8] |= 0x80 >> (i % 8)  # clkhash/bitarray order: bit 0 is the high bit
    assert clk == bytes(expected)
    bits = np.array([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=bool)
    assert xor_fold(bits, 1).astype(int).tolist() == [[1, 0, 0, 1]]
    assert xor_fold(bits, 2).astype(int).tolist() == [[1, 1]]


def test_folded_schema_hashes_into_the_long_filter_and_folds() -> None:
    doc = _schema([_feature("a", {"type": "exact"}, {"bitsPerToken": 5})], l=64, xorFolds=1)
    folded = ClkEncoder(parse_schema(doc), SECRET)
    assert folded.length == 128 and len(folded.encode(["v"])) == 8
    unfolded = np.zeros(128, dtype=bool)
    unfolded[list(folded.indices(["v"]))] = True
    assert folded.encode(["v"]) == np.packbits(unfolded[:64] ^ unfolded[64:]).tobytes()


def test_different_secrets_give_unrelated_clks() -> None:
    schema = default_schema()
    record = ["anna smith", "anna", "A500S530", "1980", "02", "29", "0229", "female", "02148", ""]
    a = ClkEncoder(schema, SECRET).encode(record)
    b = ClkEncoder(schema, SECRET[::-1]).encode(record)
    assert dice(a, a) == 1.0 and dice(a, b) < 0.6


# --- schema checks ----------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=2), "version 3"),
    (lambda d: d["clkConfig"].update(l=60), "multiple of 8"),
    (lambda d: d["clkConfig"].update(l=96), "power of two"),
    (lambda d: d["clkConfig"]["kdf"].update(type="PBKDF2"), "HKDF"),
    (lambda d: d["clkConfig"]["kdf"].update(salt="not base64!"), "base64"),
    (lambda d: d["features"].append(copy.deepcopy(d["features"][0])), "unique"),
    (lambda d: d["features"][0]["hashing"].pop("strategy"), "strategy"),
    (lambda d: d["features"][0]["hashing"].update(strategy={"bitsPerToken": 0}), ">= 1"),
    (lambda d: d["features"][0]["hashing"].update(hash={"type": "md5"}), "blakeHash"),
    (lambda d: d["features"][0]["hashing"].update(comparison={"type": "numeric",
                                                              "thresholdDistance": 0,
                                                              "resolution": 1}), "positive"),
    (lambda d: d["features"][0].update(format={"type": "string", "pattern": "("}), "pattern"),
    (lambda d: d.update(features="x"), "non-empty list"),
])
def test_invalid_schemas_are_refused_with_the_reason(change, message) -> None:
    doc = _schema([_feature("a", {"type": "exact"}, {"bitsPerToken": 1})])
    change(doc)
    with pytest.raises(LinkageSchemaError, match=message):
        parse_schema(doc)
    with pytest.raises(LinkageSchemaError):
        parse_schema(["not", "an", "object"])


def test_values_are_checked_against_their_format() -> None:
    schema = parse_schema(_schema([
        _feature("year", {"type": "exact"}, {"bitsPerToken": 1},
                 fmt={"type": "integer", "minimum": 1850, "maximum": 2100},
                 missingValue={"sentinel": "", "replaceWith": ""}),
        _feature("sex", {"type": "exact"}, {"bitsPerToken": 1},
                 fmt={"type": "enum", "values": ["male", "female"]}),
        _feature("code", {"type": "exact"}, {"bitsPerToken": 1},
                 fmt={"type": "string", "pattern": "[0-9]{5}"})]))
    encoder = ClkEncoder(schema, SECRET)
    assert encoder.indices(["", "male", "02148"])  # the sentinel skips the integer check
    for bad in (["1700", "male", "02148"], ["19x0", "male", "02148"],
                ["1980", "x", "02148"], ["1980", "male", "2148"], ["1980", "male"]):
        with pytest.raises(ValueError):
            encoder.indices(bad)


# --- Patient features -------------------------------------------------------------------

def _patient(**fields: object) -> dict:
    return {"resourceType": "Patient", "id": "p1", **fields}


def test_patient_features_are_normalised() -> None:
    patient = _patient(
        name=[{"use": "old", "family": "X"},
              {"use": "official", "family": "O'BRIEN-NÚÑEZ", "given": ["BOB", "J"]}],
        gender="male", birthDate="1980-02-09",
        address=[{"use": "home", "postalCode": "SW1A 1AA"}],
        identifier=[{"system": "urn:mrn", "value": "M1"},
                    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}])
    f = patient_features(patient)
    assert f["given"] == "bob" and f["family"] == "obriennunez"
    assert f["name"] == "bob obriennunez"
    assert f["given_root"] == name_root("robert")
    assert f["name_soundex"] == "B100O165"  # Soundex B100 and O165, sorted
    assert (f["birth_year"], f["birth_month"], f["birth_day"]) == ("1980", "02", "09")
    assert f["birth_day_month"] == "0209"
    assert f["sex"] == "male" and f["postal_code"] == "sw1a1aa"
    assert f["national_id"] == "123456789"


def test_day_month_swap_and_name_swap_keep_order_free_features() -> None:
    a = patient_features(_patient(name=[{"family": "Bates", "given": ["Tim"]}],
                                  birthDate="1990-03-07"))
    b = patient_features(_patient(name=[{"family": "Tim", "given": ["Bates"]}],
                                  birthDate="1990-07-03"))
    assert a["birth_day_month"] == b["birth_day_month"] == "0307"
    assert a["name_soundex"] == b["name_soundex"]
    assert sorted(a["name"].split()) == sorted(b["name"].split())


def test_national_id_found_by_type_code_and_missing_values_are_empty() -> None:
    ssn_type = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "SS"}]}
    f = patient_features(_patient(identifier=[{"type": ssn_type, "system": "urn:x",
                                               "value": "999 88 7777"}]))
    assert f["national_id"] == "999887777"
    assert all(v == "" for k, v in f.items() if k != "national_id")


@pytest.mark.parametrize("hostile", [
    {"name": "Bob", "birthDate": 19800101, "address": "x", "identifier": {"value": 1},
     "gender": ["male"]},
    {"name": [None, 5, {"given": "notalist", "family": 7}], "address": [None, {"postalCode": 5}],
     "identifier": [None, {"value": None}], "birthDate": "not a date"},
    {"name": [{"given": ["A" * 100_000], "family": "\u0000\u202e"}]},
])
def test_hostile_patients_do_not_crash_and_give_bounded_values(hostile) -> None:
    f = patient_features(_patient(**hostile))
    assert all(isinstance(v, str) and len(v) <= 130 for v in f.values())


def test_non_patients_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Patient"):
        patient_features({"resourceType": "Observation"})
    assert normalise_name("Zoë-Ann  ") == "zoeann"


def test_common_nicknames_meet_their_formal_name() -> None:
    for nick, formal in [("bob", "robert"), ("liz", "elizabeth"), ("peggy", "margaret")]:
        assert name_root(nick) == name_root(formal), (nick, formal)


# --- Dice, blocking, matching, quality --------------------------------------------------

def test_dice_by_hand() -> None:
    a = bytes([0b11110000, 0, 0, 0, 0, 0, 0, 0])
    b = bytes([0b11000011, 0, 0, 0, 0, 0, 0, 0])
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 4))
    assert dice(bytes(8), bytes(8)) == 0.0
    with pytest.raises(ValueError):
        dice(bytes(8), bytes(16))


def test_pair_and_dense_scores_equal_brute_force() -> None:
    rng = np.random.default_rng(5)
    a = np.packbits(rng.random((30, 256)) < 0.3, axis=1)
    b = np.packbits(rng.random((40, 256)) < 0.3, axis=1)
    b[7] = a[3]  # one identical pair
    brute = np.array([[dice(x.tobytes(), y.tobytes()) for y in b] for x in a])
    left, right = np.repeat(np.arange(30), 40), np.tile(np.arange(40), 30)
    scored = score_pairs(a, b, left, right)
    assert np.allclose(scored.score, brute.ravel(), atol=1e-6) and scored.compared == 1200
    dense = dense_candidates(a, b, 0.35)
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(brute >= 0.35 - 1e-6), strict=True)}
    assert set(zip(dense.left.tolist(), dense.right.tolist(), strict=True)) == expected
    assert dense.compared == 1200 and (3, 7) in expected
    assert popcounts(a[:1])[0] == int(np.unpackbits(a[0]).sum())


def test_candidate_pairs_share_a_key_and_skip_oversized_blocks() -> None:
    keys_a = [[1, 2], [3], [], [9]]
    keys_b = [[2], [1, 3], [9], [9], [9]]
    left, right = candidate_pairs(keys_a, keys_b)
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == [
        (0, 0), (0, 1), (1, 1), (3, 2), (3, 3), (3, 4)]
    left, right = candidate_pairs(keys_a, keys_b, max_block_pairs=2)  # key 9: 1×3 pairs
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 1)]
    empty = candidate_pairs([[]], [[1]])
    assert len(empty[0]) == 0


def _scored(pairs: list[tuple[int, int, float]]) -> Scored:
    left, right, score = zip(*pairs, strict=True)
    return Scored(np.array(left), np.array(right), np.array(score, np.float32), len(pairs))


def test_greedy_clusters_keep_one_record_per_site() -> None:
    # sites 0,1,2. a0-b0 0.9 and a0-b1 0.8: b1 cannot join (site 1 taken) → stays alone;
    # c0 links to b0 (0.85) and so joins a0's cluster; a1-b1 below threshold.
    pairs = [SitePairScores(0, 1, _scored([(0, 0, 0.9), (0, 1, 0.8), (1, 1, 0.5)])),
             SitePairScores(1, 2, _scored([(0, 0, 0.85), (1, 0, 0.95)]))]
    clusters = greedy_clusters(pairs, 0.7, records=[(0, 1)])
    assert sorted(clusters) == [[(0, 0), (1, 0)], [(0, 1)], [(1, 1), (2, 0)]]


def test_support_requires_links_across_whole_clusters() -> None:
    # a0-b0 0.9, b0-c0 0.8, a0-c0 missing: single linkage chains all three, complete
    # linkage (support 1.0) keeps c0 out because one of its two cross pairs is missing
    pairs = [SitePairScores(0, 1, _scored([(0, 0, 0.9)])),
             SitePairScores(1, 2, _scored([(0, 0, 0.8)]))]
    assert greedy_clusters(pairs, 0.7) == [[(0, 0), (1, 0), (2, 0)]]
    assert sorted(greedy_clusters(pairs, 0.7, support=1.0)) == [[(0, 0), (1, 0)], [(2, 0)]]
    assert greedy_clusters(pairs, 0.7, support=0.5) == [[(0, 0), (1, 0), (2, 0)]]


def test_greedy_clusters_never_merge_two_existing_people() -> None:
    existing = [[(0, 0), (1, 0)], [(2, 0)]]
    pairs = [SitePairScores(0, 2, _scored([(0, 0, 0.99)])),
             SitePairScores(1, 3, _scored([(0, 0, 0.9)])),
             SitePairScores(2, 3, _scored([(0, 0, 0.8)]))]
    clusters = greedy_clusters(pairs, 0.7, existing=existing)
    assert sorted(clusters) == [[(0, 0), (1, 0), (3, 0)], [(2, 0)]]


def test_pairwise_quality_by_hand() -> None:
    truth = {("a", "1"): "p", ("b", "1"): "p", ("c", "1"): "p", ("a", "2"): "q", ("b", "2"): "q"}
    # predicted: {a1,b1}, {c1}, {a2,b2} → true pairs: p has 3, q has 1 = 4; found 2, both true
    assigned = {("a", "1"): "X", ("b", "1"): "X", ("c", "1"): "Y", ("a", "2"): "Z",
                ("b", "2"): "Z"}
    q = pairwise_quality(assigned, truth)
    assert (q.true_positives, q.false_positives, q.false_negatives) == (2, 0, 2)
    assert q.precision == 1.0 and q.recall == 0.5 and q.f1 == pytest.approx(2 / 3)
    wrong = pairwise_quality({("a", "1"): "X", ("b", "2"): "X"}, truth)
    assert (wrong.true_positives, wrong.false_positives, wrong.false_negatives) == (0, 1, 0)
