"""Alignment training: a planted variable is recovered, cached == uncached, R stays orthonormal."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_model
from workbench.das import (BoundlessRotatedSpaceIntervention, CounterfactualData, LowRankRotatedSpaceIntervention,
                           SubspaceInterchange, TrainConfig, evaluate, intervened_logits, source_states,
                           train_alignment, train_multitask)

SITE = "L1.resid_post"
CLASSES = 4  # the planted variable's values; answer token of value c is id c
ENTITIES = list(range(10, 58))  # token ids carrying the variable


def planted_model(m: int = 2, seed: int = 0):
    """A tiny Llama whose last token's residual stream holds a variable v in a known m-dim subspace.

    Attention and MLP outputs are zeroed, so the residual stream is the embedding at every layer;
    the embedding of entity t is ``Q₁ a_{v(t)} + Q₂ z_t`` (Q = [Q₁ Q₂] a random rotation, a_c a unit
    vector at angle 2πc/C, z_t nuisance), and the unembedding reads only Q₁: the argmax is v(t).
    Returns the model and Q₁ (d, m).
    """
    hm = tiny_model("llama", seed)
    model = hm.model
    d = model.config.hidden_size
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))  # (d, d)
    inside, outside = Q[:, :m], Q[:, m:]  # (d, m), (d, d - m)
    angles = 2 * math.pi * torch.arange(CLASSES) / CLASSES
    codes = torch.zeros(CLASSES, m)
    codes[:, 0], codes[:, 1] = torch.cos(angles), torch.sin(angles)  # (C, m)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight  # (V, d)
        for t in ENTITIES:
            nuisance = 1.5 * torch.randn(d - m, generator=gen) / math.sqrt(d - m)
            emb[t] = inside @ codes[t % CLASSES] + outside @ nuisance
        model.lm_head.weight.zero_()
        model.lm_head.weight[:CLASSES] = codes @ inside.T  # (C, d)
    return hm, inside


def planted_pairs(n: int, seed: int) -> CounterfactualData:
    """(base entity, source entity) with different values; the label is the source's value."""
    gen = torch.Generator().manual_seed(seed)
    bases, sources, labels = [], [], []
    while len(bases) < n:
        b, s = (ENTITIES[int(i)] for i in torch.randint(len(ENTITIES), (2,), generator=gen))
        if b % CLASSES != s % CLASSES:
            bases.append([7, b])
            sources.append([8, 9, s])  # a different length: padding and source positions are exercised
            labels.append(s % CLASSES)
    return CounterfactualData(bases, [[-1]] * n, sources, [[-1]] * n, torch.tensor(labels))


def test_planted_model_answers_its_variable():
    hm, _ = planted_model()
    data = planted_pairs(32, seed=5)
    from workbench.padding import left_pad as pad_left
    with torch.no_grad():
        logits = hm.forward(pad_left(data.source_ids, 0)).logits[:, -1]  # (B, V)
    assert torch.equal(logits.argmax(-1), data.labels)


def test_das_recovers_planted_subspace_and_random_one_does_not():
    hm, inside = planted_model()
    train, val, test = planted_pairs(256, 1), planted_pairs(64, 2), planted_pairs(128, 3)
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(inside.shape[0], 2)
    result = train_alignment(hm, SITE, das, train, val, TrainConfig(epochs=8, batch_size=32, lr=2e-2, progress=False))
    learned = evaluate(hm, SITE, das, test)
    assert learned.iia >= 0.95, result.val_iia
    assert das.rotation.max_orthonormality_error() < 1e-5
    # the learned rows span the planted subspace: projecting Q₁ onto them keeps (almost) all of it
    R = das.basis()  # (2, d)
    assert float((R @ inside).norm() ** 2) / 2 > 0.9
    torch.manual_seed(1)
    random = evaluate(hm, SITE, SubspaceInterchange(torch.randn(2, inside.shape[0])), test)
    assert random.iia <= 0.35  # chance among the 3 other values is 1/3; a random plane mostly keeps the base's
    assert set(learned.examples.columns) >= {"label", "predicted", "correct"}
    assert len(learned.examples) == len(test)


def test_cached_and_uncached_training_are_identical():
    hm = tiny_model("llama", seed=3)  # a real random model: every layer below the site computes
    gen = torch.Generator().manual_seed(0)
    n = 48
    ids = lambda length: [[int(t) for t in torch.randint(3, 40, (length,), generator=gen)] for _ in range(n)]  # noqa: E731
    data = CounterfactualData(ids(5), [[-2, -1]] * n, ids(5), [[-2, -1]] * n,
                              torch.randint(0, 40, (n,), generator=gen))
    runs = []
    for cache in (True, False):
        torch.manual_seed(0)
        das = LowRankRotatedSpaceIntervention(32, 3)
        config = TrainConfig(epochs=2, batch_size=16, cache_sources=cache, cache_base=False, progress=False)
        result = train_alignment(hm, SITE, das, data, data, config)
        runs.append((result, das.basis().clone(), evaluate(hm, SITE, das, data, cache_sources=cache)))
    (cached, r_cached, e_cached), (uncached, r_uncached, e_uncached) = runs
    assert cached.history["loss"].tolist() == uncached.history["loss"].tolist()
    assert torch.equal(r_cached, r_uncached)
    assert cached.val_iia == uncached.val_iia
    assert e_cached.examples["predicted"].tolist() == e_uncached.examples["predicted"].tolist()


@pytest.mark.parametrize("family,site", [("llama", "L1.resid_post"), ("llama", "L1.resid_pre"),
                                         ("llama", "L2.resid_post"), ("mistral", "L0.resid_post")])
def test_cached_base_states_train_like_the_full_forward(family, site):
    """Layers below the site cached once (and the LM head on the last position only) train like the
    hooked full forward: same losses, rotation and IIA to fp32 rounding, with ragged, left-padded
    batches; the last block's resid_post (no block above) and a block input are covered."""
    from workbench.das import base_states, cached_base_unsupported

    hm = tiny_model(family, seed=4)
    assert cached_base_unsupported(hm, site) is None
    gen = torch.Generator().manual_seed(1)
    n = 40
    ids = lambda: [[int(t) for t in torch.randint(3, 40, (int(torch.randint(3, 8, ())),), generator=gen)]  # noqa: E731
                   for _ in range(n)]
    data = CounterfactualData(ids(), [[0, -1]] * n, ids(), [[1, -1]] * n, torch.randint(0, 40, (n,), generator=gen))
    base = base_states(hm, site, data, TrainConfig(progress=False))
    states, index = source_states(hm, site, data), torch.randperm(n, generator=gen)[:16]
    for p in hm.model.parameters():
        p.requires_grad_(False)
    trained = []
    for cached in (base, None):  # five SGD steps on one batch: logits, gradients and R, tight tolerance
        torch.manual_seed(0)
        das = LowRankRotatedSpaceIntervention(32, 3)
        sgd = torch.optim.SGD(das.parameters(), lr=0.5)
        for _ in range(5):
            logits = intervened_logits(hm, site, das, data, index, states, cached)  # (16, V)
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(logits, data.labels[index]).backward()
            sgd.step()
        trained.append((logits.detach(), [p.grad for p in das.parameters()], das.basis().clone()))
    torch.testing.assert_close(trained[0][0], trained[1][0], rtol=1e-5, atol=1e-6)
    for g_cached, g_full in zip(trained[0][1], trained[1][1]):
        torch.testing.assert_close(g_cached, g_full, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(trained[0][2], trained[1][2], rtol=1e-5, atol=1e-6)
    assert (trained[0][2] - LowRankRotatedSpaceIntervention(32, 3).basis()).abs().max() > 1e-3  # R moved
    runs = []
    for cache_base in (True, False):
        torch.manual_seed(0)
        das = LowRankRotatedSpaceIntervention(32, 3)
        config = TrainConfig(epochs=3, batch_size=16, lr=5e-2, cache_base=cache_base, progress=False)
        result = train_alignment(hm, site, das, data, data, config)
        runs.append(result)
    cached, full = runs
    # evaluation on one trained intervention: the cached and full forwards predict alike
    fast, slow = evaluate(hm, site, das, data, base=base), evaluate(hm, site, das, data)
    assert fast.examples["predicted"].tolist() == slow.examples["predicted"].tolist()
    assert len(cached.history) == len(full.history) == 9
    # through train_alignment (Adam): Adam's first steps move each parameter by ~lr x sign(grad),
    # and some entries of R's parametrization have gradients at rounding level (1e-9), whose sign
    # is noise: parameters differ by ~lr, so the losses are compared (close IIAs can flip an argmax)
    torch.testing.assert_close(torch.tensor(cached.history["loss"].tolist()), torch.tensor(full.history["loss"].tolist()),
                               rtol=1e-3, atol=1e-3)
    assert cached.history["loss"].iloc[-1] < cached.history["loss"].iloc[0] - 0.05  # it trained: a real comparison
    assert len(cached.val_iia) == len(full.val_iia) == 3


def test_cached_base_states_are_refused_where_a_block_is_cut():
    from workbench.das import BaseStates, cached_base_unsupported

    hm = tiny_model("llama")
    assert "inside a block" in cached_base_unsupported(hm, "L1.attn_out")
    assert "model type" in cached_base_unsupported(tiny_model("gpt2"), "L1.resid_post")
    data = CounterfactualData([[5, 6]], [[-1]], [[7, 8]], [[-1]], torch.tensor([1]))
    with pytest.raises(ValueError, match="cache_base=False"):
        BaseStates(hm, "L1.attn_out", data)


def test_model_stays_frozen_and_untouched():
    hm, _ = planted_model()
    before = {k: v.clone() for k, v in hm.model.state_dict().items()}
    flags = [p.requires_grad for p in hm.model.parameters()]
    train_alignment(hm, SITE, LowRankRotatedSpaceIntervention(32, 2), planted_pairs(32, 1),
                    config=TrainConfig(epochs=1, progress=False))
    assert all(torch.equal(v, hm.model.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in hm.model.parameters()] == flags


def test_early_stopping_restores_best_epoch():
    hm, inside = planted_model()
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(inside.shape[0], 2)
    config = TrainConfig(epochs=30, batch_size=32, lr=2e-2, patience=1, progress=False)
    result = train_alignment(hm, SITE, das, planted_pairs(128, 1), planted_pairs(64, 2), config)
    assert result.stopped_early and len(result.val_iia) < 30
    assert result.best_epoch == max(range(len(result.val_iia)), key=lambda e: (result.val_iia[e], -e))
    assert evaluate(hm, SITE, das, planted_pairs(64, 2)).iia == pytest.approx(max(result.val_iia))


def test_boundless_anneals_and_finds_the_subspace():
    hm, inside = planted_model()
    torch.manual_seed(0)
    das = BoundlessRotatedSpaceIntervention(inside.shape[0], max_rank=8, init_size=4)
    config = TrainConfig(epochs=8, batch_size=32, lr=2e-2, temperature=(1.0, 0.05), size_penalty=0.5,
                         progress=False)
    train_alignment(hm, SITE, das, planted_pairs(256, 1), planted_pairs(64, 2), config)
    assert float(das.temperature) < 1.0
    assert evaluate(hm, SITE, das, planted_pairs(128, 3)).iia >= 0.9
    assert das.rotation.max_orthonormality_error() < 1e-5


def test_multitask_trains_each_task_jointly():
    hm, inside = planted_model()
    torch.manual_seed(0)
    tasks = {"a": LowRankRotatedSpaceIntervention(32, 2), "b": LowRankRotatedSpaceIntervention(32, 2)}
    train = {"a": planted_pairs(128, 1), "b": planted_pairs(64, 4)}
    val = {"a": planted_pairs(32, 2), "b": planted_pairs(32, 5)}
    result = train_multitask(hm, SITE, tasks, train, val, TrainConfig(epochs=6, lr=2e-2, progress=False))
    assert set(result.history["task"]) == {"a", "b"}
    steps = result.history.groupby("task")["step"].nunique()
    assert steps["a"] == steps["b"]  # the smaller task cycles: one batch per task per step
    for name in tasks:
        assert evaluate(hm, SITE, tasks[name], planted_pairs(64, 3)).iia >= 0.9
    with pytest.raises(ValueError, match="tasks differ"):
        train_multitask(hm, SITE, tasks, {"a": train["a"]})
