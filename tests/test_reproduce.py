"""`workbench reproduce` and its studies on tiny random models: the studies run, resume without
recomputing, and the report states each finding; the decoder study's diagnosis (LoReFT's paper
initialization moves the model before training, the identity one does not) is checked directly."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from transformers import AutoConfig
from conftest import tiny_model

from studies import decoder_sst2, encoder_sst2
from studies.decoder_sst2 import DecoderConfig, run_decoder
from studies.encoder_sst2 import EncoderConfig, run_encoder_study
from studies.report import build_report
from workbench import cli

TINY = dict(model="tiny", train=16, eval=24, layers=(1,), label_words=(" a", " b"))


def test_identity_init_starts_where_lora_and_zero_shot_start_and_paper_init_does_not(shared_cache, one_thread):
    hm = tiny_model("llama")
    zero = run_decoder(DecoderConfig(method="zero_shot", **TINY), hm=hm)
    identity = run_decoder(DecoderConfig(method="loreft", init="identity", steps=2, **TINY), hm=hm)
    lora = run_decoder(DecoderConfig(method="lora", steps=2, **TINY), hm=hm)
    paper = run_decoder(DecoderConfig(method="loreft", init="paper", steps=2, rank=8, **TINY), hm=hm)
    assert identity["accuracy_at_step_0"] == zero["accuracy"] == lora["accuracy_at_step_0"]
    assert identity["loss_first"] == pytest.approx(lora["loss_first"], abs=1e-6)  # both start at the base model
    assert paper["loss_first"] != pytest.approx(identity["loss_first"], abs=1e-4)  # a random edit before training
    assert not any(n.startswith("lora") for n, _ in hm.model.named_parameters())  # LoRA unloaded afterwards


def _tiny_bert_folder(tmp_path):
    hm = tiny_model("bert")
    folder = tmp_path / "tiny-bert"
    hm.model.save_pretrained(folder)
    hm.tokenizer.save_pretrained(folder)
    return str(folder)


def test_encoder_study_trains_every_method_then_resumes_without_training(tmp_path, shared_cache, one_thread,
                                                                          monkeypatch):
    config = EncoderConfig(model=_tiny_bert_folder(tmp_path), train=16, epochs=1, batch_size=8, seeds=(0, 1),
                           dev_limit=16, val=24, lr_grid={"loreft": (1e-5, 5e-2)})
    table = run_encoder_study(config, tmp_path / "enc", progress=False)
    tuning = pd.read_csv(tmp_path / "enc" / "tuning.csv")  # rates chosen on held-out train rows, not dev
    assert list(tuning.lr) == [1e-5, 5e-2] and (tuning.split == "val").all() and (tuning.dev_examples == 24).all()
    best = float(tuning.lr[tuning.dev_accuracy.idxmax()])
    rates = table.set_index("method").lr  # the seeds ran at the chosen rate; ungridded methods keep theirs
    assert rates["loreft"] == best and rates["lora"] == 5e-4 and rates["full"] == 3e-5
    assert list(table.method) == ["loreft", "lora", "full", "probe"] and (table.seeds == 2).all()
    assert table.accuracy_mean.between(0, 1).all()
    params = table.set_index("method").trainable_params
    assert params["loreft"] < params["lora"] < params["full"]  # rank 1 x 2 layers < LoRA r=8 < everything
    heads = table.set_index("method").head_params  # counted apart, as the paper does: one head for all
    d = AutoConfig.from_pretrained(config.model).hidden_size
    assert heads["loreft"] == heads["lora"] == heads["full"] == d * d + d + 2 * d + 2  # dense, tanh, out
    runs = pd.read_csv(tmp_path / "enc" / "runs.csv")
    assert len(runs) == 8 and (runs.dev_examples == 16).all()
    monkeypatch.setattr(encoder_sst2, "run_method", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = run_encoder_study(config, tmp_path / "enc", progress=False)
    pd.testing.assert_frame_equal(again, table)
    # a run depends on its own method's rate only: another LoRA rate retrains LoRA, not the others
    other = replace(config, lr={**config.lr, "lora": 1e-3})
    assert encoder_sst2.cell_stamp(other, "full", 0) == encoder_sst2.cell_stamp(config, "full", 0)
    assert encoder_sst2.cell_stamp(other, "lora", 0) != encoder_sst2.cell_stamp(config, "lora", 0)


def test_reproduce_command_runs_resumes_and_reports(tmp_path, shared_cache, one_thread, monkeypatch, capsys):
    from test_sentiment_planted import ADJECTIVES, VERBS

    from probes.sentiment import run as sentiment_run
    from workbench.data.reviews import toy_movie_reviews

    # the tiny models' word tokenizer knows only the planted test's words
    monkeypatch.setattr(sentiment_run, "toy_movie_reviews", lambda tok, *a, **k: toy_movie_reviews(
        tok, 0.5, adjectives=ADJECTIVES, verbs=VERBS))
    model = tiny_model("llama")
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: model)
    out = tmp_path / "rep"
    argv = ["reproduce", "--quick", "--only", "decoder_sst2,memorization,sentiment", "--out", str(out)]
    assert cli.main(argv) == 0
    report = (out / "report.md").read_text()
    assert "| LoReFT ≈ LoRA (decoder SST-2, SmolLM2) |" in report and "not run yet" in report  # encoder, ravel
    assert "plotly" in (out / "report.html").read_text()
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"decoder_sst2", "memorization", "sentiment"}
    decoder = json.loads((out / "decoder_sst2" / "summary.json").read_text())
    assert {r["method"] for r in decoder["table"]} == {"zero_shot", "lora", "loreft"}
    monkeypatch.setattr(decoder_sst2, "run_decoder", lambda *a, **k: pytest.fail("a finished study was rerun"))
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "decoder_sst2: finished before" in capsys.readouterr().out


def test_report_states_agreement_from_saved_numbers(tmp_path):
    folder = tmp_path / "encoder_sst2"
    folder.mkdir()
    table = [{"method": "loreft", "accuracy_mean": 0.86, "accuracy_std": 0.01, "trainable_params": 5384},
             {"method": "lora", "accuracy_mean": 0.87, "accuracy_std": 0.005, "trainable_params": 74498}]
    (folder / "summary.json").write_text(json.dumps({"table": table}))
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "summary.json").write_text(json.dumps({"ablation_lost": 0.49}))
    rows = build_report(tmp_path).set_index("study")
    assert rows.loc["encoder_sst2", "agree"] == "agree"  # 1.0 point below LoRA at 0.072x its parameters
    assert "0.072x" in rows.loc["encoder_sst2", "ours"]
    assert rows.loc["sentiment", "agree"] == "disagree" and rows.loc["sentiment", "ours"] == "-49%"
    # what run_sentiment saves: the SST rows only; the share and the random control come from them
    sst = [{"direction": "sentiment", "positions": "all", "above_chance_lost": 0.9},
           {"direction": "sentiment", "positions": "comma", "above_chance_lost": 0.03},
           {"direction": "random", "positions": "all", "above_chance_lost": 0.55}]
    (tmp_path / "sentiment" / "summary.json").write_text(json.dumps({"sst": sst}))
    row = build_report(tmp_path).set_index("study").loc["sentiment"]
    assert row["ours"] == "-90%" and row["agree"] == "agree"
    assert "random direction ablated the same way loses 55%" in row["why"]
    table[0]["accuracy_mean"] = 0.85  # 2.0 points below: outside the 1.5-point target
    (folder / "summary.json").write_text(json.dumps({"table": table}))
    assert build_report(tmp_path).set_index("study").loc["encoder_sst2", "agree"] == "disagree"


def test_only_names_the_valid_studies(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["reproduce", "--only", "glue"])
    err = capsys.readouterr().err
    assert "'glue'" in err and "choose from encoder_sst2, decoder_sst2" in err


def test_app_page_shows_the_saved_report(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    pages = Path(__file__).resolve().parents[1] / "app" / "pages"
    monkeypatch.syspath_prepend(str(pages.parent))  # pages import ui, as under `streamlit run app/Home.py`
    report = tmp_path / "runs" / "reproduce"
    (report / "sentiment").mkdir(parents=True)
    (report / "sentiment" / "summary.json").write_text(json.dumps({"ablation_lost": 0.8}))
    build_report(report)
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(tmp_path / "runs"))
    monkeypatch.delitem(sys.modules, "ui", raising=False)  # ui reads the folders from the env on import
    at = AppTest.from_file(str(pages / "9_Reproduce.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "1 of 5"  # the sentiment finding agrees (-80% vs the paper's -76%)
    shown = at.dataframe[0].value
    assert shown.set_index("finding").loc["sentiment ablation", "ours"] == "-80%"
