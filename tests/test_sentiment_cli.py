"""``workbench sentiment`` / ``workbench neuron`` commands on tiny models (the loader is stubbed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_neurons import NEURON, TEXTS, planted_neuron_model
from test_sentiment_planted import planted_model

from probes import neuron_commands, sentiment_commands
from probes.sentiment.fit import load_directions
from probes.sentiment.run import SentimentConfig, run_sentiment


def test_parser_and_layer_list_errors(capsys):
    args = sentiment_commands.build_parser().parse_args(["neuron", "--site", "L1.mlp_act", "--index", "3",
                                                          "--concept", "words:good"])
    assert args.random == 20 and args.quantile == 0.99 and args.func is neuron_commands.score_command
    with pytest.raises(ValueError, match="comma-separated layer numbers"):
        sentiment_commands._ints("0,six")


def test_run_sentiment_on_the_planted_model_writes_every_table(tmp_path, monkeypatch):
    from probes.sentiment import run as run_module
    from test_sentiment_planted import ADJECTIVES, VERBS
    from workbench.data.reviews import toy_movie_reviews

    hm, _ = planted_model()
    monkeypatch.setattr(run_module, "toy_movie_reviews", lambda tok, *a, **k: toy_movie_reviews(
        tok, 0.5, adjectives=ADJECTIVES, verbs=VERBS))
    config = SentimentConfig(layers=(0, 1), methods=("mean_diff", "probe"), sst_folder=None, batch_size=8)
    summary = run_sentiment(hm, config, tmp_path)
    curve = pd.read_csv(tmp_path / "patching" / "results.csv")
    assert set(curve["layer"]) == {0, 1} and set(curve["positions"]) == {"all", "comma"}
    assert curve.query("layer == 0 and positions == 'all'")["recovery"].item() == pytest.approx(1.0, abs=0.02)
    assert json.loads((tmp_path / "patching" / "config.json").read_text())["layers"] == [0, 1]
    assert (tmp_path / "directions" / "figure.html").exists() and (tmp_path / "directions.safetensors").exists()
    assert summary["test_accuracy"]["mean_diff"] == 1.0
    loaded = load_directions(str(tmp_path / "directions.safetensors"))
    assert set(loaded.directions) == {0, 1, 2}  # every layer: SST ablation layers default to all
    assert set(loaded.directions[0]) == {"mean_diff", "probe"}
    with pytest.raises(ValueError, match=r"model has 3 layers \(0-2\)"):
        run_sentiment(hm, SentimentConfig(layers=(5,), sst_folder=None), tmp_path / "bad")


def test_neuron_command_with_a_stubbed_model(tmp_path, monkeypatch, capsys):
    hm = planted_neuron_model()
    monkeypatch.setattr(neuron_commands, "load_from_args", lambda args: hm)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n")
    code = sentiment_commands.main(["neuron", "--site", "L0.mlp_act", "--index", str(NEURON), "--concept",
                                    "words:good,great", "--texts", str(texts), "--random", "5", "--threshold", "50",
                                    "--out", str(tmp_path / "out")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["observational"]["f1"] == 1.0 and report["interventional"]["percentile"] == 1.0
    bad = sentiment_commands.main(["neuron", "--site", "L0.mlp_act", "--index", "0", "--concept", "good",
                                   "--texts", str(texts)])
    assert bad == 2 and "cannot parse concept" in capsys.readouterr().err


def test_project_command_draws_the_projection(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    hm, u = planted_model()
    monkeypatch.setattr(sentiment_commands, "load_from_args", lambda args: hm)
    save_file({"L0.mean_diff": u.contiguous()}, str(tmp_path / "d.safetensors"))
    code = sentiment_commands.main(["sentiment", "project", "--text", "the movie was good , I hated it",
                                    "--directions", str(tmp_path / "d.safetensors"), "--layer", "0",
                                    "--component", "resid_pre", "--out", str(tmp_path / "p.html")])
    printed = capsys.readouterr().out
    assert code == 0 and "good:+4.00" in printed and "hated:-4.00" in printed and (tmp_path / "p.html").exists()
    assert sentiment_commands.main(["sentiment", "project", "--text", "x", "--directions",
                                    str(tmp_path / "d.safetensors"), "--layer", "2"]) == 2  # L2 not saved
