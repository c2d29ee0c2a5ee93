"""The nnsight backend equals the hooks backend bit for bit (``torch.equal`` on logits).

Each case runs one plan twice on the same model: through forward hooks (``backend="hooks"``, the
default) and inside nnsight traces (``backend="nnsight"``). Every case also checks that the plan
moved the logits (an intervention that did nothing would make the equality empty), and that
the hooks backend still gives the logits of an unwrapped copy after nnsight has wrapped the
model. The remote path (NDIF) needs an API key and a network: no test uses it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_model

from workbench import AddVector, MeanAblation, Patch, PlanItem, Site, ZeroAblation
from workbench.das.interventions import LowRankRotatedSpaceIntervention
from workbench.metrics import logit_difference
from workbench.sweeps import head_sweep, patch_sweep

from reft.interventions import LoReFT

FAMILIES = ("llama", "gpt2")
BASE = ["the cat sat on the mat", "Paris is in France"]  # two lengths: a padded batch
SOURCE = ["the dog sat on a mat", "Rome is in Italy"]


def random_rows(k: int, d: int, seed: int) -> torch.Tensor:
    """A random (k, d) matrix with orthonormal rows."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))  # (d, k), orthonormal columns
    return q.T.contiguous()


def das(d: int, k: int, seed: int = 0) -> LowRankRotatedSpaceIntervention:
    return LowRankRotatedSpaceIntervention(d, k).set_rotation(random_rows(k, d, seed))


def loreft(d: int, rank: int, seed: int = 0) -> LoReFT:
    torch.manual_seed(seed)
    module = LoReFT(d, rank)
    with torch.no_grad():
        module.learned_source.bias.normal_()  # a bias of 0 would leave a near-identity edit
    return module


def plans(hm) -> dict[str, list[PlanItem]]:
    """One plan per case; sizes come from the model (d = 32 in the tiny models)."""
    d = hm.site_size("L1.resid_post")
    mean = hm.cache(SOURCE, ["L1.mlp_out"])[Site(1, "mlp_out")].mean((0, 1))  # (d,)
    g = torch.Generator().manual_seed(1)
    return {
        "patch": [PlanItem("L1.resid_post", "l1", Patch())],
        "patch, 3 sites + head + dims": [
            PlanItem("L2.resid_pre", [0, -1], Patch()),
            PlanItem("L1.head2.z", "l1", Patch()),
            PlanItem("L0.attn_out", "f1", Patch(dims=[0, 3, 7]), source_positions="l1"),
        ],
        "zero ablation": [PlanItem("L1.mlp_act", "all", ZeroAblation())],
        "mean ablation": [PlanItem("L1.mlp_out", "all", MeanAblation(mean))],
        "steering (add vector)": [PlanItem("L2.resid_post", "all", AddVector(torch.randn(d, generator=g), 4.0))],
        "DAS k=3 < d": [PlanItem("L1.resid_post", "l1", das(d, 3))],
        "LoReFT r=4": [PlanItem("L1.resid_post", "f1+l1", loreft(d, 4)),
                       PlanItem("L2.resid_post", "f1+l1", loreft(d, 4, seed=1))],
    }


CASES = tuple(plans(tiny_model("llama")))


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    """(the model the backends run on, an unwrapped copy that never meets nnsight, its plans)."""
    hm = tiny_model(request.param)
    untouched = tiny_model(request.param)
    return hm, untouched, plans(hm)


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_nnsight_equals_hooks(pair, case):
    hm, untouched, all_plans = pair
    plan = all_plans[case]
    hooks = hm.run(BASE, plan, sources=[SOURCE])
    traced = hm.run(BASE, plan, sources=[SOURCE], backend="nnsight")
    assert torch.equal(traced, hooks), f"{case}: max |diff| {(traced - hooks).abs().max().item():.3g}"
    clean = hm.run(BASE)
    assert (hooks - clean).abs().max() > 1e-3, f"{case} left the logits unchanged: the comparison is empty"
    # nnsight wrapped hm.model in place: the hooks backend must still compute what it did unwrapped
    assert torch.equal(hooks, untouched.run(BASE, copy.deepcopy(plan), sources=[SOURCE]))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hm.model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_bf16_equals_hooks(family):
    """Half precision: model and interventions in bfloat16, every case still bit-identical."""
    hm = tiny_model(family)
    hm.model.to(torch.bfloat16)
    for case, plan in plans(hm).items():
        for item in plan:
            item.intervention.to(torch.bfloat16)
        hooks = hm.run(BASE, plan, sources=[SOURCE])
        assert hooks.dtype == torch.bfloat16
        traced = hm.run(BASE, plan, sources=[SOURCE], backend="nnsight")
        assert torch.equal(traced, hooks), f"{case}: max |diff| {(traced.float() - hooks.float()).abs().max().item():.3g}"


@torch.no_grad()
def test_left_padded_batch_and_source_values(llama):
    """Mapping inputs padded on the left, precomputed source values: the same as hooks."""
    batch = llama.tokenize(BASE, padding_side="left")
    assert not bool(batch["attention_mask"].all())
    values = llama.cache(SOURCE, ["L1.mlp_out"], positions="l1")[Site(1, "mlp_out")]  # (2, 1, d)
    plan = [PlanItem("L1.mlp_out", "l1", Patch(), source_values=values),
            PlanItem("L0.resid_post", [1], das(32, 2, seed=3))]
    hooks = llama.run(batch, plan, sources=[SOURCE])
    assert torch.equal(llama.run(batch, plan, sources=[SOURCE], backend="nnsight"), hooks)


@torch.no_grad()
def test_model_without_tokenizer():
    """No tokenizer: the plain nnsight envoy traces it (locally); remote runs say what to do."""
    from workbench import HookedModel
    hm = tiny_model("gpt2")
    bare = HookedModel(hm.model, None)
    batch = hm.tokenize(BASE)
    plan = [PlanItem("L1.mlp_out", "l1", loreft(32, 4))]
    assert torch.equal(bare.run(batch, plan, backend="nnsight"), bare.run(batch, plan))
    with pytest.raises(ValueError, match="needs a model NDIF can name.*remote_model"):
        bare.run(batch, plan, backend="nnsight", remote=True)


def test_gradients_equal(llama):
    """A LoReFT step's gradients through the traces equal those through the hooks."""
    grads = []
    for backend in ("hooks", "nnsight"):
        module = loreft(32, 4)
        logits = llama.run(BASE, [PlanItem("L1.resid_pre", "f1+l1", module)], backend=backend)
        logits[:, -1].logsumexp(-1).sum().backward()
        grads.append([p.grad for p in module.parameters()])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[0])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_tokenizer_untouched_and_errors(llama):
    side, pad = llama.tokenizer.padding_side, llama.tokenizer.pad_token
    llama.run(BASE[0], [], backend="nnsight")
    assert (llama.tokenizer.padding_side, llama.tokenizer.pad_token) == (side, pad)
    with pytest.raises(ValueError, match=r"backend 'nnsite'.*\('hooks', 'nnsight'\)"):
        llama.run(BASE[0], [], backend="nnsite")
    with pytest.raises(ValueError, match=r"remote=True .* backend='nnsight'"):
        llama.run(BASE[0], [], remote=True)
    with pytest.raises(ValueError, match="pass sources="):
        llama.run(BASE[0], [PlanItem("L1.resid_post", "l1", Patch())], backend="nnsight")
    with pytest.raises(ValueError, match="hidden size 16, but the site has 32"):
        llama.run(BASE[0], [PlanItem("L1.resid_post", "l1", AddVector(torch.ones(16)))], backend="nnsight")


@pytest.mark.parametrize("family", FAMILIES)
def test_sweeps_match_hooks(family):
    """Sweeps as nnsight traces: the hooks sweep's values, within float rounding (the hooks
    backend's fast sweep paths compute the same cells with other arithmetic), and the same table."""
    hm = tiny_model(family)
    metric = logit_difference(*hm.tokenizer.convert_tokens_to_ids(["France", "Italy"]))
    base, source = "Paris is in the country of", "Rome is in the city of"
    for sweep in (patch_sweep, head_sweep):
        hooks = sweep(hm, base, source, metric=metric, batch_size=8)
        traced = sweep(hm, base, source, metric=metric, batch_size=8, backend="nnsight")
        assert list(traced.columns) == list(hooks.columns) and len(traced) == len(hooks)
        torch.testing.assert_close(torch.tensor(traced["value"].values), torch.tensor(hooks["value"].values),
                                   atol=1e-5, rtol=0)
        assert traced.attrs["path"] == "nnsight"
        assert hooks["value"].abs().max() > 0 and (hooks["value"] != hooks["value"][0]).any()


@pytest.mark.slow
@torch.no_grad()
def test_nnsight_equals_hooks_on_smollm2():
    """The real SmolLM2-135M (its own copy: nnsight wraps the model it runs)."""
    from workbench import load_model
    hm = load_model("smollm2-135m")
    d = hm.site_size("L5.resid_post")
    base, source = ["The capital of France is Paris"], ["The capital of Italy is Rome"]
    mean = hm.cache(source, ["L5.mlp_out"])[Site(5, "mlp_out")].mean((0, 1))  # (d,)
    cases = {
        "patch": [PlanItem("L5.resid_post", [3, -1], Patch())],
        "zero ablation": [PlanItem("L5.mlp_act", "all", ZeroAblation())],
        "mean ablation": [PlanItem("L5.mlp_out", "all", MeanAblation(mean))],
        "steering": [PlanItem("L10.resid_post", "all", AddVector(torch.randn(d, generator=torch.Generator().manual_seed(0)), 4.0))],
        "DAS k=8": [PlanItem("L8.resid_post", "l1", das(d, 8))],
        "LoReFT r=4": [PlanItem("L8.resid_post", "f1+l1", loreft(d, 4))],
    }
    clean = hm.run(base)
    for case, plan in cases.items():
        hooks = hm.run(base, plan, sources=[source])
        traced = hm.run(base, plan, sources=[source], backend="nnsight")
        assert torch.equal(traced, hooks), f"{case}: max |diff| {(traced - hooks).abs().max().item():.3g}"
        assert (hooks - clean).abs().max() > 1e-3, case


@torch.no_grad()
def test_remote_request_rehearsed_offline(tmp_path):
    """The remote path without NDIF: `remote_model` builds a weightless (meta) HookedModel from a
    folder, and ``remote="local"`` serializes each trace exactly as for NDIF (our code shipped by
    value), then runs it here. Oracle: the hooks backend on the same checkpoint loaded normally."""
    import transformers
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    from workbench import HookedModel
    from workbench.backends.remote import remote_model

    saved = tiny_model("llama")
    saved.model.save_pretrained(tmp_path)
    stub = remote_model(str(tmp_path), tokenizer=copy.deepcopy(saved.tokenizer))
    assert next(stub.model.parameters()).device.type == "meta" and stub.device.type == "cpu"
    loaded = HookedModel(transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval(), saved.tokenizer)
    plan = [PlanItem("L1.resid_post", "l1", Patch()), PlanItem("L2.resid_post", "f1+l1", loreft(32, 4))]
    want = loaded.run(BASE, plan, sources=[SOURCE])
    got = stub.run(BASE, plan, sources=[SOURCE], backend="nnsight", remote="local")
    assert torch.equal(got, want)
    assert {"workbench", "reft"} <= set(_PICKLE_BY_VALUE_MODULES)
    with pytest.raises(ValueError, match=r"remote='yes': expected one of \(False, True, 'local'\)"):
        stub.run(BASE, plan, sources=[SOURCE], backend="nnsight", remote="yes")


def test_cli_patch_backend(tmp_path, capsys):
    """``workbench patch --backend nnsight`` writes the table the hooks backend writes (same cells,
    values within float rounding: the hooks sweep takes its faster paths)."""
    from unittest import mock

    import pandas as pd

    from workbench.cli import main

    argv = ["patch", "--base", "Paris is in the country of", "--source", "Rome is in the city of",
            "--target", "France", "--foil", "Italy", "--batch-size", "8"]
    tables = {}
    for backend in ("hooks", "nnsight"):
        with mock.patch("workbench.models.load_model", lambda *a, **k: tiny_model("llama")):
            assert main([*argv, "--backend", backend, "--out", str(tmp_path / backend)]) == 0
        tables[backend] = pd.read_parquet(tmp_path / backend / "results.parquet")
        config = (tmp_path / backend / "config.json").read_text()
        assert f'"backend": "{backend}"' in config
    hooks, traced = tables["hooks"], tables["nnsight"]
    assert list(traced[["layer", "position"]].itertuples(index=False)) == list(hooks[["layer", "position"]].itertuples(index=False))
    torch.testing.assert_close(torch.tensor(traced["value"].values), torch.tensor(hooks["value"].values), atol=1e-5, rtol=0)
    capsys.readouterr()
