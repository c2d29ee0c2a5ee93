"""K memorization runs batched in one forward equal K sequential runs (losses, steps, weights)."""

from __future__ import annotations

import pytest
import torch
import transformers

from conftest import word_tokenizer
from reft.memorize import MemorizeConfig, memorize, task_for
from reft.memorize.batched import RowGroups, memorize_batched, stack_tasks
from workbench import HookedModel

TEXT = list(range(5, 60))  # the "text": token ids 5..59 (the word tokenizer's vocabulary is 64)


@pytest.fixture(autouse=True)
def one_thread(one_thread):
    yield


def capable_llama(seed: int = 0) -> HookedModel:
    """A tiny random Llama wide enough (d=64, init 0.2) for one rank-1 edit to steer a few tokens."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.2)
    config._attn_implementation = "eager"
    return HookedModel(transformers.LlamaForCausalLM(config).eval(), word_tokenizer(), name="capable-llama")


# run 0 recites its token and stops at step 6 while the others go on; runs differ in N, seed,
# rank, kind, pairs, lr and budget
CONFIGS = [MemorizeConfig(n_tokens=1, layer=1, seed=0, max_steps=12, key="w{i}", lr=0.05),
           MemorizeConfig(n_tokens=7, layer=1, seed=1, max_steps=12, key="w{i}", rank=2),
           MemorizeConfig(n_tokens=7, layer=1, seed=2, max_steps=6, key="w{i}", n_pairs=2, kind="loreft")]


@pytest.mark.parametrize("path", ["fast", "naive"])
def test_batched_runs_equal_sequential_runs(path):
    hm = capable_llama()
    configs = [MemorizeConfig(**{**c.to_dict(), "path": path}) for c in CONFIGS]
    rows, edits = memorize_batched(hm, TEXT, configs, progress=False, return_interventions=True)
    assert [r["batched_runs"] for r in rows] == [3, 3, 3]
    for config, row, edit in zip(configs, rows, edits):
        task = task_for(hm.tokenizer, "", config.n_tokens, n_pairs=config.n_pairs, key=config.key,
                        seed=config.seed, text_ids=TEXT)
        alone, single = memorize(hm, task, config, progress=False, return_intervention=True)
        for column in ("steps", "exact", "exact_prefix", "train_prefix", "path_used"):
            assert row[column] == alone[column], column
        assert row["loss_first"] == pytest.approx(alone["loss_first"], abs=1e-4)
        assert row["loss_final"] == pytest.approx(alone["loss_final"], abs=1e-4)
        assert row["loss_final"] < row["loss_first"]  # the runs trained: the comparison means something
        ours, theirs = edit.state_dict(), single.state_dict()
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-4)
    assert rows[0]["exact"] and rows[0]["steps"] < 12 and rows[1]["steps"] == 12 and rows[2]["steps"] == 6


def test_row_groups_and_stacking_check_their_inputs():
    from reft.interventions import ConsReFT

    groups = RowGroups([ConsReFT(8, 1), ConsReFT(8, 1)], sizes=(1, 2))
    base = torch.randn(3, 1, 8)
    out = groups(base)  # (3, 1, 8)
    assert torch.equal(out[:1], groups.groups[0](base[:1])) and torch.equal(out[1:], groups.groups[1](base[1:]))
    with pytest.raises(ValueError, match="sum 3"):
        groups(torch.zeros(4, 1, 8))
    hm = capable_llama()
    one = task_for(hm.tokenizer, "", 3, key="w{i}", text_ids=TEXT)
    other = task_for(hm.tokenizer, "", 3, key="w{i} w", text_ids=TEXT)
    with pytest.raises(ValueError, match="keys of one token count"):
        stack_tasks([one, other])
    with pytest.raises(ValueError, match="share one layer"):
        memorize_batched(hm, TEXT, [MemorizeConfig(layer=0), MemorizeConfig(layer=1)], progress=False)


def test_cli_memorize_batch(tmp_path, monkeypatch, capsys):
    import json

    import pandas as pd

    from conftest import tiny_model
    from workbench import cli

    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: tiny_model("llama"))
    text = tmp_path / "story.txt"
    text.write_text("the movie was good and the plot was bad " * 20)
    code = cli.main(["memorize-batch", "--text", str(text), "--key", "the movie {i}", "--tokens", "2,3",
                     "--seeds", "0,1", "--layer", "1", "--max-steps", "2", "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 runs batched at layer 1" in out
    table = pd.read_csv(tmp_path / "b" / "results.csv")
    assert sorted(zip(table["n_tokens"], table["seed"])) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert set(table["batched_runs"]) == {4}
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["runs"] == 4
