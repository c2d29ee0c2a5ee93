"""Memorization sweeps: a sweep killed midway and resumed gives the uninterrupted table; capacity
search skips larger N after a failure; setup mismatches are refused; the CLI runs end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import tiny_model
from reft import memorize_commands
from reft.memorize import MemorizeConfig, capacity_figure, capacity_table, expand_grid, memorize_sweep
from reft.memorize import sweep as sweep_module
from reft.memorize.sweep import TIMING, ResultsLog
from workbench import cli

WORDS = "the cat sat on the mat . a dog was in the city , Paris is in France and Rome is in Italy ! " * 4


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(WORDS)
    return path


BASE = MemorizeConfig(key="the movie {i}", lr=0.05, max_steps=4, verify=True)
GRID = {"n_tokens": [2, 4], "layer": [0, 2], "variant": ["natural", "random"]}


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in TIMING if c in df.columns]).reset_index(drop=True)


def test_grid_order_and_errors():
    configs = expand_grid(BASE, GRID)
    assert [(c.variant, c.layer, c.n_tokens) for c in configs][:3] == [("natural", 0, 2), ("natural", 0, 4),
                                                                     ("natural", 2, 2)]
    assert len(configs) == 8 and all(c.lr == 0.05 for c in configs)
    with pytest.raises(ValueError, match="cannot sweep \\['lr'\\]"):
        expand_grid(BASE, {"lr": [1.0]})


def test_killed_sweep_resumes_to_the_uninterrupted_table(tmp_path, text_file, monkeypatch):
    hm = tiny_model("llama")
    whole = memorize_sweep(hm, str(text_file), GRID, BASE, out=tmp_path / "whole", stop_after_failure=False,
                           progress=False)
    assert len(whole) == 8 and set(whole["variant"]) == {"natural", "random"}

    real, calls = sweep_module.memorize, []

    def dies_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "memorize", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        memorize_sweep(hm, str(text_file), GRID, BASE, out=tmp_path / "resumed", stop_after_failure=False,
                       progress=False)
    assert len(ResultsLog(tmp_path / "resumed" / "results.jsonl").read()) == 3  # nothing lost
    assert not list((tmp_path / "resumed").glob(".results.jsonl-*"))  # no temporary files left

    monkeypatch.setattr(sweep_module, "memorize", lambda *a, **k: calls.append(2) or real(*a, **k))
    resumed = memorize_sweep(hm, str(text_file), GRID, BASE, out=tmp_path / "resumed", stop_after_failure=False,
                             progress=False)
    assert calls.count(2) == 5  # only the 5 missing runs were computed
    pd.testing.assert_frame_equal(comparable(resumed), comparable(whole))
    saved = pd.read_parquet(tmp_path / "resumed" / "results.parquet")
    pd.testing.assert_frame_equal(comparable(saved), comparable(whole))
    config = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert config["grid"]["layer"] == [0, 2] and (tmp_path / "resumed" / "figure.html").exists()

    again = memorize_sweep(hm, str(text_file), GRID, BASE, out=tmp_path / "resumed", stop_after_failure=False,
                           progress=False)
    assert calls.count(2) == 5 and len(again) == 8  # a finished sweep recomputes nothing


def test_capacity_search_skips_larger_n_after_a_failure(tmp_path, text_file):
    hm = tiny_model("llama")  # a d=32 random model: 4 steps memorize nothing
    grid = {"n_tokens": [2, 4, 8], "layer": [1]}
    df = memorize_sweep(hm, str(text_file), grid, BASE, out=tmp_path / "cap", progress=False)
    assert df["n_tokens"].tolist() == [2] and not df["exact"].any()
    table = capacity_table(df)
    assert table[["layer", "capacity", "first_failed_n"]].values.tolist() == [[1, 0, 2]]
    fig = capacity_figure(df)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [2]


def test_resume_with_another_model_or_text_is_refused(tmp_path, text_file):
    grid = {"n_tokens": [2], "layer": [1]}
    memorize_sweep(tiny_model("llama"), str(text_file), grid, BASE, out=tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="another model"):
        memorize_sweep(tiny_model("qwen2"), str(text_file), grid, BASE, out=tmp_path / "s", progress=False)
    other = tmp_path / "other.txt"
    other.write_text(WORDS[::-1])
    with pytest.raises(ValueError, match="another text_sha"):
        memorize_sweep(tiny_model("llama"), str(other), grid, BASE, out=tmp_path / "s", progress=False)


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path, text_file):
    from reft.memorize.sweep import _exclusive
    with _exclusive(tmp_path):
        with pytest.raises(ValueError, match="another sweep is writing to"):
            memorize_sweep(tiny_model("llama"), str(text_file), {"n_tokens": [2]}, BASE, out=tmp_path, progress=False)
    df = memorize_sweep(tiny_model("llama"), str(text_file), {"n_tokens": [2], "layer": [1]}, BASE, out=tmp_path,
                        progress=False)
    assert len(df) == 1  # the lock is released afterwards


def test_cli_memorize_and_sweep(tmp_path, text_file, monkeypatch, capsys):
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: tiny_model("llama"))
    assert "reft.memorize_commands" in cli.command_modules()  # registered as a package entry point
    common = ["--text", str(text_file), "--key", "the movie {i}", "--max-steps", "3", "--quiet"]
    code = cli.main(["memorize", "--tokens", "4", "--layer", "1", "--rank", "1", "--variant", "shuffled",
                     "--out", str(tmp_path / "one"), *common])
    assert code == 0
    out = capsys.readouterr().out
    assert "N=4 x 1 pair(s), layer 1, consreft rank 1, shuffled" in out and "fast path" in out
    record = json.loads((tmp_path / "one" / "config.json").read_text())
    assert record["memorize_config"]["variant"] == "shuffled" and record["intervention"]["rank"] == 1
    assert (tmp_path / "one" / "intervention.safetensors").exists()

    code = cli.main(["memorize", "--tokens", "3", "--layer", "2", "--pairs", "2", "--kind", "loreft",
                     "--out", str(tmp_path / "pairs"), *common])
    assert code == 0 and "N=3 x 2 pair(s), layer 2, loreft rank 1, natural" in capsys.readouterr().out
    assert json.loads((tmp_path / "pairs" / "config.json").read_text())["keys"] == ["the movie 1", "the movie 2"]

    code = cli.main(["memorize-sweep", "--tokens", "2,4", "--layers", "0,1", "--variants", "natural,random",
                     "--no-stop-after-failure", "--out", str(tmp_path / "sweep"), *common])
    assert code == 0
    assert "capacity (largest N recited exactly)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "sweep" / "results.csv")) == 8

    code = cli.main(["memorize", "--tokens", "4", "--layer", "7", "--out", str(tmp_path / "bad"), *common])
    assert code == 2 and "layer 7 out of range" in capsys.readouterr().err


def test_cli_options_parse():
    import argparse
    parser = argparse.ArgumentParser()
    memorize_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["memorize-sweep", "--tokens", "16,32", "--variants", "natural,shuffled"])
    assert args.tokens == [16, 32] and args.variants == ["natural", "shuffled"] and args.layers == [15]
    args = parser.parse_args(["memorize", "--text", "alice", "--tokens", "64", "--layer", "15", "--rank", "1"])
    assert (args.tokens, args.layer, args.rank, args.kind, args.position) == (64, 15, 1, "consreft", -1)
    with pytest.raises(SystemExit):
        parser.parse_args(["memorize-sweep", "--tokens", "16,x"])
