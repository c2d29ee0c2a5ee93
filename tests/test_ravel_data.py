"""RAVEL data: the loader (the registry's copy, synthetic releases with every quirk, malformed
files), the geonames default, queries, counterfactuals, and the CLI on every entity type."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import tiny_model, word_tokenizer
from ravel_fixtures import LAUREATES, quirky_nobel_release, write_release
from workbench import cli
from workbench.data import (DataReport, RavelData, answer_text, build_queries, city_dataset, entity_last_token,
                            filter_correct, load_ravel, ravel_counterfactuals)
from workbench.data.registry import RAVEL_TYPES


def test_loads_registry_ravel_city_data(shared_cache):
    data = load_ravel("ravel", "city")  # the session cache, imported from the offline mirror with --from
    assert data.origin == str(shared_cache / "ravel")
    assert len(data.entities()) == 3552
    assert data.attribute_names == ["Continent", "Country", "Language", "Latitude", "Longitude", "Timezone"]
    assert data.attributes["Aalborg"]["Country"] == "Denmark"
    assert {len(data.entities(s)) for s in ("train", "val", "test")} == {1787, 818, 947}
    assert all(t.count("%s") == 1 for a in data.attribute_names for t in data.templates(a))
    assert sum(len(data.templates(a, "test")) for a in data.attribute_names) == 69
    assert set(data.report.outcome) == {"kept"}  # the city files have no quirks
    small = data.restrict(["Country"], ["Aalborg", "Aarau", "nowhere"])
    assert small.entities() == ["Aalborg", "Aarau"] and small.attribute_names == ["Country"]
    with pytest.raises(KeyError, match="available"):
        data.templates("Population")
    with pytest.raises(FileNotFoundError, match=r"ravel \(occupation\) is not in the cache .*\['city'\].*"
                                                r"workbench data fetch ravel"):
        load_ravel("ravel", "occupation")  # the mirror has only cities


def _counts(report: pd.DataFrame) -> dict:
    return {(r.what, r.outcome): r.count for r in report.itertuples()}


def test_quirky_release_is_loaded_and_every_skip_counted(tmp_path):
    data = load_ravel(quirky_nobel_release(tmp_path), "nobel_prize_winner")
    counts = _counts(data.report)
    assert counts[("entities", "kept")] == len(LAUREATES) == len(data.entities())
    assert counts[("entities", "duplicate_entity")] == 2  # a repeated key, and the NFD spelling of Schrödinger
    assert counts[("entities", "no_values")] == 1 and counts[("entities", "no_split")] == 1
    assert counts[("values", "empty_value")] >= 2 * len(LAUREATES) + 1  # Award Year "", Gender null, Bohr's Field
    assert counts[("attributes", "no_values")] == 2  # Award Year and Gender: templates, no values
    assert counts[("templates", "not_one_%s")] == 1 and counts[("templates", "no_split")] == 1
    assert data.attribute_names == ["Country of Birth", "Field"]
    assert data.attributes["Marie Curie"] == {"Field": "Physics", "Country of Birth": "Poland"}  # the first kept
    assert "Erwin Schrödinger" in data.attributes and data.attributes["Niels Bohr"] == {"Country of Birth": "Denmark"}
    assert data.resolve(["country_of_birth", "FIELD"]) == ["Country of Birth", "Field"]
    with pytest.raises(KeyError, match=r"'Award Year' not in .*dropped at load \(no_values\): Award Year; Gender"):
        data.resolve(["Award Year"])


def test_queries_count_multi_token_values_and_unusable_entities():
    tok = word_tokenizer()
    attrs = {"Paris": {"Country": "France", "Kind": "good cat"}, "Rome": {"Country": "Italy"},
             "dog": {"Country": "", "Kind": "mat"}}
    data = RavelData("toy", {e: {a: v for a, v in d.items() if v} for e, d in attrs.items()},
                     {"Country": ["%s is in the country of"], "Kind": ["the %s is a"]},
                     {e: "train" for e in attrs}, {"%s is in the country of": "train", "the %s is a": "train"})
    report = DataReport()
    queries = build_queries(tok, data, ["Country", "Kind"], "train", report=report)
    counts = _counts(report.frame())
    assert counts[("queries", "kept")] == len(queries) == 4
    assert counts[("queries", "no_value")] == 2  # dog has no Country, Rome no Kind
    assert counts[("multi_token_value", "kept")] == 1  # "good cat": the label is its first token
    row = queries[(queries.entity == "Paris") & (queries.attribute == "Kind")].iloc[0]
    assert tok.convert_ids_to_tokens([row.label]) == ["good"]


@pytest.mark.parametrize("change, pattern", [
    (lambda f: f["attributes"]["Paris"].update(Country=["France"]),
     r"entity_attributes.json: entity 'Paris' field 'Country' must be a string"),
    (lambda f: f["prompts"]["Country"].append(7), r"attribute_to_prompts.json: field 'Country' has template 7"),
    (lambda f: f["entity_split"].update(Paris="dev"), r"entity_to_split.json: field 'Paris' has split 'dev'"),
    (lambda f: f["prompts"].update(Country="one string"), r"attribute_to_prompts.json: field 'Country' must be a list"),
    (lambda f: f.update(attributes=["Paris"]), r"entity_attributes.json: field '<top level>' must be a JSON object"),
])
def test_files_not_in_ravel_format_name_file_and_field(tmp_path, change, pattern):
    files = {"attributes": {"Paris": {"Country": "France"}, "Rome": {"Country": "Italy"}},
             "prompts": {"Country": ["%s is in the country of"]}, "entity_split": {"Paris": "train", "Rome": "test"},
             "prompt_split": {"%s is in the country of": "train"}}
    change(files)
    write_release(tmp_path, "city", files["attributes"], files["prompts"], files["entity_split"], files["prompt_split"])
    with pytest.raises(ValueError, match=pattern):
        load_ravel(tmp_path)


def test_missing_folder_file_bad_json_and_nothing_usable(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ravel(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="ravel_verb_entity_attributes.json not found"):
        load_ravel(tmp_path, "verb")
    write_release(tmp_path, "city", {"Paris": {"Country": ""}}, {"Country": ["%s is in"]})
    with pytest.raises(ValueError, match="no usable city entities"):
        load_ravel(tmp_path)
    (tmp_path / "ravel_city_entity_attributes.json").write_text("{not json")
    with pytest.raises(ValueError, match="entity_attributes.json: not valid JSON"):
        load_ravel(tmp_path)


@pytest.mark.parametrize("entity_type", RAVEL_TYPES)
def test_every_entity_type_through_the_cli(tmp_path, monkeypatch, capsys, entity_type):
    """A synthetic release per type (attribute names with spaces, quirks): the CLI loads and filters it
    and writes data_report.csv; the random model knows nothing, so it then stops with a clear error."""
    release = quirky_nobel_release(tmp_path / "nobel")
    folder = tmp_path / "release"
    folder.mkdir()
    for path in release.iterdir():  # the same content under this entity type's file names
        (folder / path.name.replace("nobel_prize_winner", entity_type)).write_bytes(path.read_bytes())
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: tiny_model("llama"))
    out = tmp_path / "out"
    code = cli.main(["ravel", "--data", str(folder), "--entity-type", entity_type, "--attributes", "country of birth",
                     "Field", "--methods", "pca", "--no-reference", "--examples", "4", "2", "2", "--layer", "1",
                     "--k", "2", "--max-templates", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "no test cause examples for Country of Birth" in captured.err
    report = pd.read_csv(out / "data_report.csv")
    assert {"duplicate_entity", "empty_value", "no_values", "model_wrong"} <= set(report.outcome)
    assert set(report.stage) >= {"load", "queries:train", "filter:test"}


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
