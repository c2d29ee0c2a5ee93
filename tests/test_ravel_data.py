"""RAVEL data: the loader (shared files, malformed files), the geonames default, queries, counterfactuals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import SHARED_DATA, word_tokenizer
from workbench.data import (RavelData, answer_text, build_queries, city_dataset, entity_last_token, filter_correct,
                            load_ravel, ravel_counterfactuals)

RAVEL = SHARED_DATA / "ravel"
needs_ravel = pytest.mark.skipif(not (RAVEL / "ravel_city_entity_attributes.json").exists(),
                                 reason=f"shared RAVEL data not found at {RAVEL}")


@needs_ravel
def test_loads_shared_ravel_city_data():
    data = load_ravel(RAVEL, "city")
    assert len(data.entities()) == 3552
    assert data.attribute_names == ["Continent", "Country", "Language", "Latitude", "Longitude", "Timezone"]
    assert data.attributes["Aalborg"]["Country"] == "Denmark"
    assert {len(data.entities(s)) for s in ("train", "val", "test")} == {1787, 818, 947}
    assert all(t.count("%s") == 1 for a in data.attribute_names for t in data.templates(a))
    assert sum(len(data.templates(a, "test")) for a in data.attribute_names) == 69
    small = data.restrict(["Country"], ["Aalborg", "Aarau", "nowhere"])
    assert small.entities() == ["Aalborg", "Aarau"] and small.attribute_names == ["Country"]
    with pytest.raises(KeyError, match="available"):
        data.templates("Population")


def _copy(tmp_path):
    if not RAVEL.exists():
        pytest.skip(f"shared RAVEL data not found at {RAVEL}")
    for f in RAVEL.glob("ravel_city_*.json"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _edit(path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("file, change, pattern", [
    ("ravel_city_entity_attributes.json", lambda o: o["Aalborg"].update(Country=["Denmark"]),
     r"entity_attributes.json: entity 'Aalborg' field 'Country' must be a string"),
    ("ravel_city_attribute_to_prompts.json", lambda o: o["Country"].append("no placeholder here"),
     r"attribute_to_prompts.json: field 'Country' has template 'no placeholder here'"),
    ("ravel_city_entity_to_split.json", lambda o: o.update(Aalborg="dev"),
     r"entity_to_split.json: field 'Aalborg' has split 'dev'"),
    ("ravel_city_entity_to_split.json", lambda o: o.pop("Aarau"),
     r"entity_to_split.json: 1 entity\(s\) have no split, e.g. \['Aarau'\]"),
    ("ravel_city_attribute_to_prompts.json", lambda o: o.update(Country="one string"),
     r"attribute_to_prompts.json: field 'Country' must be a list"),
])
def test_malformed_file_names_file_and_field(tmp_path, file, change, pattern):
    folder = _copy(tmp_path)
    _edit(folder / file, change)
    with pytest.raises(ValueError, match=pattern):
        load_ravel(folder)


def test_missing_folder_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ravel(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="ravel_city_entity_attributes.json not found"):
        load_ravel(tmp_path)
    (tmp_path / "ravel_city_entity_attributes.json").write_text("{not json")
    with pytest.raises(ValueError, match="entity_attributes.json: not valid JSON"):
        load_ravel(tmp_path)


def test_geonames_city_set():
    data = city_dataset(min_population=2_000_000)
    assert data.attributes["Paris"] == {"Country": "France", "Continent": "Europe", "Timezone": "Europe/Paris",
                                        "Latitude": "48", "Longitude": "2", "Language": "French"}
    assert data.attributes["Tokyo"]["Continent"] == "Asia"
    assert set(data.entity_split.values()) == {"train", "val", "test"}
    for a in data.attribute_names:
        assert [len(data.templates(a, s)) for s in ("train", "val", "test")] == [3, 1, 1]
        assert "Q:" in data.templates(a, "train")[-1]
    assert city_dataset(min_population=2_000_000, band=10).attributes["Paris"]["Latitude"] == "40"
    assert len(city_dataset(min_population=2_000_000, max_entities=5).entities()) == 5
    with pytest.raises(ValueError, match="band = 0"):
        city_dataset(band=0)


def _toy_data() -> RavelData:
    """Word-tokenizer entities: Paris/Rome are cities, cat/dog stand-ins; two attributes."""
    attrs = {"Paris": {"Country": "France", "Kind": "city"}, "Rome": {"Country": "Italy", "Kind": "city"},
             "cat": {"Country": "France", "Kind": "mat"}, "dog": {"Country": "Italy", "Kind": "mat"}}
    prompts = {"Country": ["%s is in the country of"], "Kind": ["the %s is a"]}
    split = {"Paris": "train", "Rome": "train", "cat": "train", "dog": "train"}
    return RavelData("toy", attrs, prompts, split, {t: "train" for ts in prompts.values() for t in ts})


def test_queries_answers_and_entity_positions():
    tok = word_tokenizer()
    assert answer_text("%s is in", "France") == " France"
    assert answer_text('{"city": "%s", "country": "', "France") == "France"
    ids, position, width = entity_last_token(tok, "the %s is a", "cat")
    assert tok.convert_ids_to_tokens(ids)[position] == "cat" and position == 1 and width == 1
    assert entity_last_token(tok, "%s is a", "good cat")[1:] == (1, 2)
    queries = build_queries(tok, _toy_data(), ["Country", "Kind"], split="train")
    assert len(queries) == 8
    row = queries[(queries.entity == "Rome") & (queries.attribute == "Country")].iloc[0]
    assert tok.convert_ids_to_tokens([row.label]) == ["Italy"] and row.position == 0


def test_filter_keeps_exactly_the_correct_queries(llama):
    queries = build_queries(llama.tokenizer, _toy_data(), ["Country", "Kind"], split="train")
    with torch.no_grad():  # one unpadded run per query: the reference answers
        predicted = [int(llama.forward(text).logits[0, -1].argmax()) for text in queries.text]
    for i in (0, 5):  # make two queries "known" to the random model
        queries.at[i, "label"] = predicted[i]
    kept, summary = filter_correct(llama, queries)
    expected = {(queries.entity[i], queries.template[i]) for i in range(len(queries)) if predicted[i] == queries.label[i]}
    assert set(zip(kept.entity, kept.template)) == expected and len(expected) >= 2
    assert summary["queries"].sum() == 8 and summary["correct"].sum() == len(kept)
    assert ((summary["kept_share"] - summary["correct"] / summary["queries"]).abs() < 1e-12).all()


def test_cause_and_isolate_counterfactuals():
    tok = word_tokenizer()
    queries = build_queries(tok, _toy_data(), ["Country", "Kind"], split="train")
    cause = ravel_counterfactuals(tok, _toy_data(), queries, "Country", "cause", n=20, seed=0)
    assert len(cause) == 8  # every ordered pair with different countries (2 x 2 x 2), each once
    for i, m in cause.meta.iterrows():
        assert m.base_value != m.source_value and tok.convert_ids_to_tokens([int(cause.labels[i])]) == [m.source_value]
    isolate = ravel_counterfactuals(tok, _toy_data(), queries, "Country", "isolate", n=20, seed=0)
    assert len(isolate) > 0 and set(isolate.meta.attribute) == {"Kind"}
    for i, m in isolate.meta.iterrows():  # label: the base's Kind; the source's Kind differs
        assert tok.convert_ids_to_tokens([int(isolate.labels[i])]) == [m.base_value] != [m.source_value]
    with pytest.raises(ValueError, match="kind 'both'"):
        ravel_counterfactuals(tok, _toy_data(), queries, "Country", "both", n=2)


@pytest.mark.slow
def test_smollm2_knows_paris(smollm2):
    data = city_dataset(min_population=2_000_000)  # Paris: 2.1 M in geonames
    queries = build_queries(smollm2.tokenizer, data.restrict(entities=["Paris", "Tokyo"]), ["Country"])
    kept, summary = filter_correct(smollm2, queries)
    assert {"Paris", "Tokyo"} <= set(kept.entity)
    tokens = smollm2.tokenizer.convert_ids_to_tokens(list(queries.ids[0]))
    assert tokens[queries.position[0]].lstrip("Ġ") in ("Paris", "Tokyo")
