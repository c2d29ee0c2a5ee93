"""Alignment search on a (tiny) language model through workbench plans, against a hand-written hook;
DBM training at a site; MIB-style scores; the `workbench align` command."""

from __future__ import annotations

import json

import pandas as pd
import torch

from causal.featurizers import DifferentiableMask, Featurizer
from causal.model import CausalModel, Variable
from causal.search import SearchConfig, align, alignment_heatmap, correct_examples, mib_scores
from causal.counterfactuals import lm_data
from causal.tasks import LMTask
from causal.train import MaskConfig, train_mask
from workbench.das import evaluate
from workbench.interventions import Patch
from tests.conftest import tiny_model

ANIMALS, PLACES = ("cat", "dog"), ("Paris", "Rome")


def word_task() -> LMTask:
    """'the X sat on the Y' -> X: a copy task the word tokenizer can spell."""
    model = CausalModel([Variable("x", ANIMALS), Variable("y", PLACES), Variable("X", ANIMALS, ("x",), lambda x: x),
                         Variable("out", ANIMALS, ("X", "y"), lambda x, y: x)], name="copy")

    def render(v):
        text = f"the {v['x']} sat on the {v['y']}"
        return text, {"x": (4, 4 + len(v["x"])), "last": (len(text) - 1, len(text))}

    return LMTask("copy", model, render, lambda value: value, ("x", "last"), ("X",))


def hook_iia(hm, layer: int, data) -> float:
    """IIA of a whole-vector patch at the residual stream after ``layer``, one example at a time,
    with a plain register_forward_hook (independent of plans, positions and padding)."""
    block = hm.model.model.layers[layer]
    hits = 0
    for i in range(len(data)):
        seen = {}

        def read(_m, _a, out):
            seen["h"] = (out[0] if isinstance(out, tuple) else out)[0, data.source_positions[i][0]].clone()

        handle = block.register_forward_hook(read)
        with torch.no_grad():
            hm.model(torch.tensor([data.source_ids[i]]))
        handle.remove()

        def write(_m, _a, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[0, data.base_positions[i][0]] = seen["h"]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = block.register_forward_hook(write)
        with torch.no_grad():
            logits = hm.model(torch.tensor([data.base_ids[i]])).logits[0, -1]
        handle.remove()
        hits += int(logits.argmax()) == int(data.labels[i])
    return hits / len(data)


def test_full_alignment_iia_equals_a_hand_written_hook(one_thread):
    hm = tiny_model("llama")
    config = SearchConfig(n_train=8, n_test=16, oversample=1, require_correct=False)
    table = align(hm, word_task(), ["X"], layers=[0, 2], positions=["x", "last"], featurizers=[Featurizer("full")],
                  config=config, progress=False)
    assert len(table) == 4 and set(table["site"]) == {"L0.resid_post", "L2.resid_post"}
    rows, _ = correct_examples(hm, word_task(), "X", config)
    test = lm_data(hm.tokenizer, word_task(), rows.iloc[8:], "x")
    got = table.set_index(["layer", "position"])["iia"]
    for layer in (0, 2):
        assert got[(layer, "x")] == hook_iia(hm, layer, test)
    scores = mib_scores(table)
    assert set(scores["position"]) == {"x", "last"} and (scores["best_iia"] >= scores["mean_iia"]).all()
    fig = alignment_heatmap(table)
    assert fig.data[0].z.shape == (2, 2)


def test_dbm_at_a_site_trains_and_its_hard_mask_is_a_dims_patch(one_thread):
    hm = tiny_model("llama")
    config = SearchConfig(n_train=16, n_test=16, oversample=1, require_correct=False)
    rows, _ = correct_examples(hm, word_task(), "X", config)
    data = lm_data(hm.tokenizer, word_task(), rows, "x")
    torch.manual_seed(0)
    mask = DifferentiableMask(32)
    losses = train_mask(hm, "L1.resid_post", mask, data, MaskConfig(epochs=4, batch_size=8, lr=0.5, sparsity=0.05))
    assert all(torch.isfinite(torch.tensor(losses))) and not torch.equal(mask.logits.detach(), torch.ones(32))
    assert not any(p.requires_grad is False for p in hm.model.parameters())  # the model is as it was
    with torch.no_grad():  # a random model has nothing to find: plant a mask to check what eval swaps
        mask.logits.copy_(torch.where(torch.arange(32) % 3 == 0, 1.0, -1.0))
    assert mask.selected() == list(range(0, 32, 3))
    masked = evaluate(hm, "L1.resid_post", mask, data)
    patched = evaluate(hm, "L1.resid_post", Patch(dims=mask.selected()), data)
    assert masked.examples["predicted"].tolist() == patched.examples["predicted"].tolist()


def test_align_command_saves_a_run_and_resumes(tmp_path, monkeypatch, one_thread):
    from workbench.cli import main
    monkeypatch.setattr("causal.commands.load_from_args", lambda args: tiny_model("llama"))
    monkeypatch.setattr("causal.tasks.LM_TASKS", {**__import__("causal.tasks").tasks.LM_TASKS, "ioi": word_task})
    out = tmp_path / "run"
    argv = ["align", "ioi", "--layers", "0", "1", "--positions", "x", "--featurizers", "full", "das",
            "--k", "2", "--train", "8", "--test", "8", "--oversample", "1", "--epochs", "1", "--keep-wrong", "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 and table["iia"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert {s["featurizer"] for s in summary["scores"]} == {"full", "das k=2"}
    assert (out / "figure.html").is_file() and json.loads((out / "config.json").read_text())["task"] == "ioi"
    cells = pd.read_csv(out / "cells.csv")
    cells.iloc[:3].to_csv(out / "cells.csv", index=False)  # as if killed after three cells
    assert main(argv) == 0
    again = pd.read_parquet(out / "results.parquet")
    assert again.sort_values(["featurizer", "layer"])["iia"].tolist() == table.sort_values(["featurizer", "layer"])["iia"].tolist()
    for bad in (["--layers", "5"], ["--positions", "nowhere"], ["--variables", "colour"]):  # checked before any work
        assert main(["align", "ioi", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists(), f"{bad} left a run folder behind"


def test_app_page_shows_a_saved_align_run(tmp_path, monkeypatch, one_thread):
    import sys
    from pathlib import Path
    from streamlit.testing.v1 import AppTest
    from causal.search import alignment_heatmap
    from workbench.runs import save_run
    app = Path(__file__).resolve().parents[1] / "app"
    monkeypatch.syspath_prepend(str(app))
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(tmp_path))
    monkeypatch.delitem(sys.modules, "ui", raising=False)
    table = pd.DataFrame({"variable": ["carry"] * 4, "featurizer": ["das k=4"] * 2 + ["dbm"] * 2, "kind": ["das"] * 2 + ["dbm"] * 2,
                          "layer": [0, 7] * 2, "position": ["last"] * 4, "iia": [0.5, 0.9, 0.4, 0.7]})
    save_run(tmp_path / "align-carry", table, {"command": "align", "task": "addition", "model": "tiny"},
             figure=alignment_heatmap(table))
    at = AppTest.from_file(str(app / "pages" / "7_Causal_Abstraction.py"), default_timeout=60).run()
    assert not at.exception
    scores = at.dataframe[0].value
    assert scores.set_index("featurizer").loc["das k=4", "best_iia"] == 0.9
    assert scores.set_index("featurizer").loc["dbm", "best_layer"] == 7
    assert "carry (2 values) <- a0, b0" in at.code[0].value
