"""Determinism on CPU: the same seed gives bit-identical training curves (==, not approx); another
seed gives a different one. Covers the ReFT loop (shuffling, dropout, init), DAS and Boundless DAS
alignment training, and the memorization run. Each run is preceded by unrelated use of the global
RNG, so a curve that depended on state left over from earlier code would fail.

What is not deterministic on GPU is documented in README.md ("Devices and precision").
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from reft import ReftConfig, TrainConfig, get_reft_model, tokenize_pairs, train
from reft.memorize import MemorizeConfig, build_task, experiment, memorize
from workbench.das import (BoundlessRotatedSpaceIntervention, CounterfactualData, LowRankRotatedSpaceIntervention,
                           train_alignment)
from workbench.das import TrainConfig as DasConfig

CHECK = experiment.check_finite_loss  # the memorization loop checks every step's loss here
PAIRS = [("the cat sat on", "the mat ."), ("Paris is in", "France ."), ("I thought the movie was", "great !"),
         ("a dog sat in", "the city ,"), ("Rome is in", "Italy ."), ("I hated", "it ?")]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread for the module


def stir_rng() -> None:
    """Consume the global RNG by a varying amount, as unrelated code between two runs would."""
    torch.rand(int(torch.randint(1, 1000, (1,))))


def reft_curve(seed: int, kind: str = "loreft") -> list[float]:
    stir_rng()
    hm = tiny_model("llama")
    torch.manual_seed(seed)  # intervention init
    reft = get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, kind=kind, positions="f1+l1", dropout=0.1))
    rows = tokenize_pairs(hm.tokenizer, PAIRS, chat_template=False)
    result = train(reft, rows, TrainConfig(epochs=3, batch_size=2, lr=0.02, seed=seed, progress=False))
    weights = [p.detach().clone() for p in reft.parameters()]
    return [h["loss"] for h in result.history if "loss" in h], weights


@pytest.mark.parametrize("kind", ["loreft", "direft"])
def test_reft_training_is_bit_identical_for_a_seed(kind):
    (curve, weights), (again, weights_again) = reft_curve(0, kind), reft_curve(0, kind)
    assert len(curve) >= 9 and curve == again
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_again))
    other, _ = reft_curve(1, kind)
    assert other != curve


def counterfactuals(n: int = 32) -> CounterfactualData:
    gen = torch.Generator().manual_seed(0)
    ids = lambda length: [[int(t) for t in torch.randint(3, 36, (length,), generator=gen)] for _ in range(n)]  # noqa: E731
    return CounterfactualData(ids(4), [[-1]] * n, ids(5), [[-1]] * n, torch.randint(0, 36, (n,), generator=gen))


@pytest.mark.parametrize("boundless", [False, True])
@pytest.mark.parametrize("cache_sources", [True, False])
def test_das_training_is_bit_identical_for_a_seed(boundless, cache_sources):
    data = counterfactuals()

    def curve(seed: int):
        stir_rng()
        hm = tiny_model("gpt2")
        torch.manual_seed(seed)  # intervention init (the caller builds it)
        das = (BoundlessRotatedSpaceIntervention(32, max_rank=8, init_size=2) if boundless
               else LowRankRotatedSpaceIntervention(32, 2))
        config = DasConfig(epochs=2, batch_size=8, seed=seed, cache_sources=cache_sources, progress=False)
        result = train_alignment(hm, "L1.resid_post", das, data, data, config)
        return result.history["loss"].tolist(), result.val_iia, das.rotation.weight.detach().clone()

    (losses, iia, R), (losses_again, iia_again, R_again) = curve(0), curve(0)
    assert len(losses) == 8 and losses == losses_again and iia == iia_again
    assert torch.equal(R, R_again)
    assert curve(1)[0] != losses


def memorize_curve(seed: int, monkeypatch) -> tuple[list[float], dict]:
    """The memorization run's per-step losses (read where the loop checks each one) and its row."""
    losses: list[float] = []

    def record(loss, *args, **kwargs):
        losses.append(loss)
        return CHECK(loss, *args, **kwargs)

    monkeypatch.setattr(experiment, "check_finite_loss", record)
    stir_rng()
    hm = tiny_model("llama")
    task = build_task(list(range(5, 60)), lambda key: [3, 4, 5, 6], n_tokens=6, variant="random", key="k{i}",
                      seed=seed, vocab_size=64, exclude={0, 1, 2})
    config = MemorizeConfig(n_tokens=6, layer=1, rank=2, kind="loreft", variant="random", lr=0.03, max_steps=25,
                            seed=seed, verify=False)
    row = memorize(hm, task, config, progress=False)
    return losses, row


def test_memorization_run_is_bit_identical_for_a_seed(monkeypatch):
    losses, row = memorize_curve(0, monkeypatch)
    again, row_again = memorize_curve(0, monkeypatch)
    assert len(losses) == row["steps"] + 1 >= 3 and losses == again  # one loss per step, and the last
    timings = ("seconds", "ms_per_step", "setup_seconds")
    assert {k: v for k, v in row.items() if k not in timings} == {k: v for k, v in row_again.items() if k not in timings}
    assert memorize_curve(1, monkeypatch)[0] != losses
