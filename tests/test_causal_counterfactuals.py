"""Counterfactual data derived from causal models: labels, balance, seeds, saving, tokenized positions."""

from __future__ import annotations

import json

import pytest

from causal.counterfactuals import (counterfactual_examples, lm_data, load_counterfactuals, save_counterfactuals,
                                    token_index)
from causal.tasks import addition, hierarchical_equality, ioi


def test_labels_are_the_causal_models_interchange_outputs():
    m = hierarchical_equality(n_objects=8)
    table = counterfactual_examples(m, ["WX", "YZ"], n=60, seed=1, shared_source=False)
    for row in table.itertuples():
        # recompute independently: the variables' values on their sources, then the output by hand
        wx = row.sources["WX"]["W"] == row.sources["WX"]["X"]
        yz = row.sources["YZ"]["Y"] == row.sources["YZ"]["Z"]
        assert row.label == (wx == yz) and row.label == m.interchange(row.base, row.sources)["O"]
        assert row.changed == (row.label != m.run(row.base)["O"])
    assert table["changed"].sum() == 30  # balanced


def test_seeded_unbalanced_and_filtered():
    m = addition().model
    a = counterfactual_examples(m, ["carry"], n=40, seed=5)
    assert a.equals(counterfactual_examples(m, ["carry"], n=40, seed=5))
    assert not a.equals(counterfactual_examples(m, ["carry"], n=40, seed=6))
    free = counterfactual_examples(m, ["carry"], n=200, seed=0, balanced=False)
    assert 0.3 < free["changed"].mean() < 0.7  # P(carry differs) ~ 0.5 under uniform digits
    kept = counterfactual_examples(m, ["carry"], n=20, where=lambda v: v["a1"] == 3)
    assert all(r["a1"] == 3 for r in kept["base"]) and all(s["carry"]["a1"] == 3 for s in kept["sources"])
    with pytest.raises(ValueError, match="changed/unchanged"):
        counterfactual_examples(m, ["carry"], n=10, where=lambda v: not v["carry"])  # no example can change


def test_saved_with_config_and_read_back(tmp_path):
    m = hierarchical_equality(n_objects=5)
    table = counterfactual_examples(m, ["WX"], n=10, seed=2)
    paths = save_counterfactuals(tmp_path / "cf", table, {"task": "hierarchical_equality", "seed": 2})
    config = json.loads(paths["config"].read_text())
    assert config["seed"] == 2 and config["command"] == "counterfactuals"
    back = load_counterfactuals(tmp_path / "cf")
    assert back["base"].tolist() == table["base"].tolist() and back["label"].tolist() == table["label"].tolist()


def test_tokenized_positions_are_the_named_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    task = addition()
    table = counterfactual_examples(task.model, ["carry"], n=12, seed=0)
    data = lm_data(tok, task, table, "b0")
    for i, row in enumerate(table.itertuples()):
        assert tok.decode([data.base_ids[i][data.base_positions[i][0]]]) == str(row.base["b0"])
        assert tok.decode([data.labels[i]]) == str(row.label)[0]
    task = ioi()
    table = counterfactual_examples(task.model, ["io_position"], n=12, seed=0)
    data = lm_data(tok, task, table, "S2")
    for i, row in enumerate(table.itertuples()):
        subject = (row.base["first"], row.base["second"])[row.base["repeated"]]
        assert tok.decode([data.base_ids[i][data.base_positions[i][0]]]).strip() == subject
        assert tok.decode([data.labels[i]]) == " " + row.label
    with pytest.raises(ValueError, match="not one of task ioi's positions"):
        lm_data(tok, task, table, "b0")
    ids, index = token_index(tok, "12+35=", (5, 6))
    assert index == len(ids) - 1


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer
    from workbench.models import prepare_default_model
    return AutoTokenizer.from_pretrained(prepare_default_model())
