"""The analyses on the real SmolLM2-135M (slow): attribution ranks real patches; the lens at the
last layer is the model's logits bit for bit and the DLA terms add up to its logit difference."""

from __future__ import annotations

import pytest
import torch

from analyses.attribution import compare_with_patching
from analyses.dla import direct_logit_attribution
from analyses.lens import decode, logit_lens
from workbench import Site

pytestmark = pytest.mark.slow
BASE, SOURCE = "Paris is in the country of", "Rome is in the country of"


def test_attribution_ranks_real_patches_on_smollm2(smollm2, one_thread):
    layers = [0, 9, 19, 29]
    table, rho = compare_with_patching(smollm2, BASE, SOURCE, target=" France", foil=" Italy", layers=layers)
    assert len(table) == len(layers) * (3 * 6 + smollm2.layout.n_heads)
    # all 30 layers (docs/analyses.md): rho 0.91 over 810 cells; these 4 layers: 0.79 (CPU, fp32)
    assert rho["all"] > 0.7, rho
    assert min(rho[c] for c in ("resid_pre", "attn_out", "mlp_out", "z")) > 0.6, rho


def test_lens_and_dla_on_smollm2(smollm2, one_thread):
    text = "The capital of France is"
    last = Site(smollm2.n_layers - 1, "resid_post")
    states = smollm2.cache(text, [last])[last]
    logits = smollm2.forward(text, use_cache=False).logits
    assert torch.equal(decode(smollm2, states), logits)
    df = logit_lens(smollm2, text, top_k=3, target=" Paris")
    final = df[(df.layer == smollm2.n_layers - 1) & (df.position == df.position.max())]
    assert final["target_rank"].iloc[0] == 0  # the model's own answer
    early = df[(df.layer == 0) & (df.position == df.position.max())]
    assert early["target_prob"].iloc[0] < final["target_prob"].iloc[0]
    dla = direct_logit_attribution(smollm2, text, target=" Paris", foil=" London")
    assert dla["dla"].sum() == pytest.approx(dla["logit_diff"].iloc[0], rel=1e-3, abs=1e-3)
