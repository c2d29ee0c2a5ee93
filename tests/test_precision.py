"""Half precision on every family (CPU bf16; fp16 with a grad scaler): the invariants stay
bit-exact, training moves the loss, save/load is exact, sweeps match per-cell runs, and bf16
results track fp32 ones."""

from __future__ import annotations

import pytest
import torch

from conftest import DECODERS, FAMILIES, tiny_model
from reft import LoReFT, ReftConfig, ReftForClassification, get_reft_model, load_reft
from reft.data import tokenize_classification, tokenize_pairs
from reft.train import TrainConfig, train
from workbench import Patch, PlanItem, Site
from workbench.das import CounterfactualData, LowRankRotatedSpaceIntervention, TrainConfig as DasConfig
from workbench.das import train_alignment
from workbench.metrics import logit_difference
from workbench.sweeps import patch_sweep

TEXTS = ["the cat sat on the mat", "a dog was in the city"]
BF16 = torch.bfloat16


def half_model(family: str, dtype=BF16, seed: int = 0):
    hm = tiny_model(family, seed)
    hm.model.to(dtype)
    return hm


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_invariants_are_bit_exact(family):
    hm = half_model(family)
    with torch.no_grad():
        plain = hm.forward(TEXTS).logits
        assert plain.dtype == BF16
        assert torch.equal(hm.run(TEXTS), plain)
        assert torch.equal(hm.run(TEXTS, [PlanItem("L1.resid_post", "all", Patch())], sources=[TEXTS]), plain)
        edit = LoReFT(hm.site_size("L1.resid_post"), 2, dtype=BF16).set_identity()
        assert torch.equal(hm.run(TEXTS, [PlanItem("L1.resid_post", "all", edit)]), plain)
        das = LowRankRotatedSpaceIntervention(hm.site_size("L1.mlp_act"), 0, dtype=BF16)
        assert torch.equal(hm.run(TEXTS, [PlanItem("L1.mlp_act", "l1", das)], sources=[TEXTS[::-1]]), plain)


def reft_losses(hm, family: str):
    """Train a small ReFT on ``hm``; returns (model, per-step losses)."""
    torch.manual_seed(0)
    config = ReftConfig(layers=(1, 2), rank=2, positions="f1+l1")
    if family == "bert":
        model = ReftForClassification(get_reft_model(hm, config), 2)
        rows = tokenize_classification(hm.tokenizer, ["great movie", "bad movie", "loved it", "hated it"], [1, 0, 1, 0])
    else:
        model = get_reft_model(hm, config)
        rows = tokenize_pairs(hm.tokenizer, [("the cat", "sat on the mat"), ("a dog", "was in the city")],
                              chat_template=False)
    result = train(model, rows, TrainConfig(epochs=15, batch_size=4, lr=2e-2, progress=False))
    return model, [h["loss"] for h in result.history if "loss" in h]


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_reft_trains_like_fp32_and_reloads_exactly(family, tmp_path):
    _, full = reft_losses(tiny_model(family), family)
    hm = half_model(family)
    model, half = reft_losses(hm, family)
    assert full[0] - full[-1] > 0.05  # the fp32 run learns (tiny random models move their loss slowly)
    assert half[0] - half[-1] > 0.5 * (full[0] - full[-1]), (half, full)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # fp32 master values
    model.save(tmp_path / "half")
    again = load_reft(tmp_path / "half", hm)
    batch = hm.tokenize(TEXTS)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(**batch).logits, again(**batch).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_das_trains(family):
    hm = half_model(family)
    tok = hm.tokenizer
    bases, sources = ["the cat sat on the"] * 8, ["a dog was in the"] * 8
    labels = [tok.convert_tokens_to_ids(w) for w in ["mat", "city"] * 4]
    data = CounterfactualData.from_texts(tok, bases, sources, labels, [[-1]] * 8, [[-1]] * 8)
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(hm.site_size("L1.resid_post"), 4, dtype=hm.dtype)
    result = train_alignment(hm, "L1.resid_post", das, data, None, DasConfig(epochs=20, batch_size=8, lr=5e-2,
                                                                               progress=False))
    losses = result.history["loss"].tolist()
    assert losses[-1] < losses[0], losses
    assert das.rotation.max_orthonormality_error() < 1e-5 and das.rotation.reflectors.dtype == torch.float32


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_bf16_sweep_equals_one_run_per_cell(family):
    hm = half_model(family, seed=1)
    base, source = "Paris is in the country of", "Rome is in the city of"
    df = patch_sweep(hm, base, source, target="France", foil="Italy", batch_size=5)
    ids = hm.tokenizer.convert_tokens_to_ids
    metric = logit_difference(ids("France"), ids("Italy"))
    with torch.no_grad():
        for row in df.itertuples():
            plan = [PlanItem(Site(row.layer, "resid_pre"), [row.position], Patch())]
            expected = metric(hm.run(base, plan, sources=[source]).float(), hm.tokenize(base)).item()
            assert row.value == pytest.approx(expected, abs=2e-2)  # bf16: batching changes rounding


@pytest.mark.parametrize("family", DECODERS)
def test_bf16_generation_starts_with_the_intervened_argmax(family):
    hm = half_model(family)
    edit = LoReFT(hm.site_size("L1.resid_post"), 2, dtype=BF16)
    plan = [PlanItem("L1.resid_post", "l1", edit)]
    with torch.no_grad():
        first = hm.run(TEXTS[0], plan)[0, -1].argmax()
        out = hm.generate(TEXTS[0], plan, max_new_tokens=3)["ids"]
    assert out.shape == (1, 3) and int(out[0, 0]) == int(first)


def test_bf16_tracks_fp32():
    full, half = tiny_model("llama"), half_model("llama")
    torch.manual_seed(0)
    edit = LoReFT(32, 4)
    with torch.no_grad():
        a = full.run(TEXTS, [PlanItem("L1.resid_post", "f1+l1", edit)])
        b = half.run(TEXTS, [PlanItem("L1.resid_post", "f1+l1", edit)])  # the same fp32 edit, cast when applied
    assert b.dtype == BF16
    assert float((a - b.float()).abs().max()) < 0.05 * float(a.abs().max())


def test_fp16_reft_trains_with_a_grad_scaler(monkeypatch):
    import importlib
    train_module = importlib.import_module("reft.train")
    scalers = []
    real = train_module.autocast_for
    monkeypatch.setattr(train_module, "autocast_for", lambda *a: scalers.append(real(*a)[1]) or real(*a))
    _, full = reft_losses(tiny_model("llama"), "llama")
    _, half = reft_losses(half_model("llama", dtype=torch.float16), "llama")
    assert scalers[0] is None and isinstance(scalers[1], torch.amp.GradScaler)
    assert half[0] - half[-1] > 0.5 * (full[0] - full[-1]) > 0.025, (half, full)


def test_fp16_das_trains_with_a_grad_scaler():
    hm = half_model("llama", dtype=torch.float16)
    tok = hm.tokenizer
    labels = [tok.convert_tokens_to_ids(w) for w in ["mat", "city"] * 4]
    data = CounterfactualData.from_texts(tok, ["the cat sat on the"] * 8, ["a dog was in the"] * 8, labels,
                                         [[-1]] * 8, [[-1]] * 8)
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(32, 4, dtype=hm.dtype)
    result = train_alignment(hm, "L1.resid_post", das, data, None, DasConfig(epochs=20, batch_size=8, lr=5e-2,
                                                                               progress=False))
    losses = result.history["loss"].tolist()
    assert losses[-1] < losses[0] and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("dtype", [BF16, torch.float16])
def test_half_precision_memorization_fast_path_equals_naive(dtype):
    from test_memorization import capable_llama, small_task

    from reft.memorize import MemorizeConfig, memorize

    hm = capable_llama()
    hm.model.to(dtype)
    task = small_task(n_tokens=4, variant="random", seed=0)
    rows = [memorize(hm, task, MemorizeConfig(n_tokens=4, layer=0, rank=1, variant="random", lr=0.03, max_steps=30,
                                              seed=1, path=path), progress=False) for path in ("fast", "naive")]
    assert rows[0]["loss_final"] == pytest.approx(rows[1]["loss_final"], rel=1e-2)
    assert rows[0]["loss_final"] < 0.5 * rows[0]["loss_first"]
