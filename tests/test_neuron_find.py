"""``workbench neuron find`` and the neuron commands' limits and summaries (tiny planted model)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from test_neurons import NEURON, SITE, TEXTS, planted_neuron_model

from probes import neuron_commands
from probes.neurons import Concept, observational_scores, site_activations
from probes.neurons_find import find_neurons, rank_neurons


def test_rank_neurons_agrees_with_observational_scores_per_neuron():
    hm = planted_neuron_model()
    concept = Concept.parse("words:good,great")
    acts, tokens = site_activations(hm, SITE, TEXTS)
    present = tokens["token"].map(concept.matches)
    ranking = rank_neurons(acts, torch.tensor(present.to_numpy()), quantile=0.9)
    assert ranking.iloc[0]["neuron"] == NEURON and ranking.iloc[0]["rank"] == 1
    assert list(ranking["f1"]) == sorted(ranking["f1"], reverse=True)
    for row in ranking.sample(8, random_state=0).itertuples():
        alone = observational_scores(acts[:, row.neuron], present, quantile=0.9)
        assert alone["f1"] == pytest.approx(row.f1) and alone["threshold"] == pytest.approx(row.threshold)
        assert (alone["precision"] == pytest.approx(row.precision)) or pd.isna(row.precision)


def test_find_neurons_puts_the_planted_neuron_first_and_saves_everything(tmp_path):
    hm = planted_neuron_model()
    table, summary = find_neurons(hm, SITE, Concept.parse("words:good,great"), TEXTS, top_k=3, n_random=6,
                                  quantile=0.915, out=tmp_path)
    assert table.iloc[0]["neuron"] == NEURON and table.iloc[0]["percentile"] == 1.0
    assert list(table["group"]) == ["top"] * 3 + ["random"] * 6 and table["neuron"].is_unique
    assert summary["best"]["neuron"] == NEURON and summary["top_k"] == 3
    for part in ("neurons/results.parquet", "neurons/figure.html", "neurons/config.json", "ranking/results.csv",
                 "summary.json"):
        assert (tmp_path / part).exists(), part
    assert len(pd.read_csv(tmp_path / "ranking" / "results.csv")) == hm.site_size(SITE)
    assert json.loads((tmp_path / "summary.json").read_text())["best"]["neuron"] == NEURON
    with pytest.raises(ValueError, match="top_k \\+ n_random <= 48"):
        find_neurons(hm, SITE, Concept.parse("words:good"), TEXTS, top_k=40, n_random=20)
    with pytest.raises(ValueError, match="no token of the 2 texts matches words:capital"):
        find_neurons(hm, SITE, Concept.parse("words:capital"), TEXTS[:2])


def test_neuron_commands_honour_limit_and_write_summaries(tmp_path, monkeypatch, capsys):
    hm = planted_neuron_model()
    monkeypatch.setattr(neuron_commands, "load_from_args", lambda args: hm)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS * 5) + "\n")
    code = neuron_commands.main(["neuron", "--site", SITE, "--index", str(NEURON), "--concept", "words:good,great",
                                 "--texts", str(texts), "--limit", "8", "--random", "4", "--out", str(tmp_path / "s")])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["texts"] == 8 and "first 8 of 40 texts" in captured.err
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["texts"] == 8
    code = neuron_commands.main(["neuron", "find", "--site", SITE, "--concept", "words:good,great", "--texts",
                                 str(texts), "--limit", "8", "--top-k", "2", "--random", "3", "--quantile", "0.915",
                                 "--quiet", "--out", str(tmp_path / "f")])
    printed = capsys.readouterr().out
    assert code == 0 and "top-2 mean effect" in printed and (tmp_path / "f" / "summary.json").exists()
    assert neuron_commands.main(["neuron", "--site", SITE, "--concept", "words:good"]) == 2
    assert "needs --site, --index and --concept" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse rejects the value itself, with usage and the range
        neuron_commands.main(["neuron", "find", "--site", SITE, "--concept", "words:good", "--texts", str(texts),
                              "--limit", "0"])
    assert exited.value.code == 2 and "'0' is out of range; give an integer >= 1" in capsys.readouterr().err
