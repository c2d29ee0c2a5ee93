"""Attribution patching against real patching (`workbench.sweeps`): exact where the metric is
linear in the patched state, a usable ranking elsewhere."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from torch import nn

from analyses.attribution import attribution_patching, compare_with_patching
from workbench import HookedModel

BASE, SOURCE = "Paris is in the country of", "Rome is in the country of"


def linear_toy() -> HookedModel:
    """A tiny llama (float64) whose logits are linear in its last layer's attention output, MLP
    output and per-head z: the final norm is the identity and the last MLP writes nothing, so
    those states reach the unembedding through sums and linear maps only."""
    hm = tiny_model("llama")
    model = hm.model.double()
    model.model.norm = nn.Identity()
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight.zero_()
    return HookedModel(model, hm.tokenizer, name="linear-toy")


def test_equals_real_patching_where_the_metric_is_linear(one_thread):
    hm = linear_toy()
    last = hm.n_layers - 1
    table, _ = compare_with_patching(hm, BASE, SOURCE, target="France", foil="Italy",
                                     components=("attn_out", "mlp_out"), layers=[last])
    assert table["patching"].abs().max() > 1e-3  # the patches do move the metric
    # the sweeps report metric values in float32: equal up to that rounding (~1e-7 of the value)
    tolerance = 1e-6 * max(1.0, abs(float(table["base_value"][0])))
    torch.testing.assert_close(torch.tensor(table["attribution"].to_numpy()),
                               torch.tensor(table["patching"].to_numpy()), rtol=0, atol=tolerance)
    # the same toy is not linear in earlier layers' states: there the estimate is only first order
    early, _ = compare_with_patching(hm, BASE, SOURCE, target="France", foil="Italy",
                                     components=("resid_pre",), layers=[0], heads=False)
    assert (early["attribution"] - early["patching"]).abs().max() > 1e-6


def test_ranks_real_patches_on_a_random_model(one_thread):
    hm = tiny_model("llama")
    table, rho = compare_with_patching(hm, BASE, SOURCE, target="France", foil="Italy")
    assert set(rho) == {"resid_pre", "attn_out", "mlp_out", "z", "all"}
    assert rho["all"] > 0.5, rho
    # layer 0's input differs only at the swapped word: elsewhere s = b, zero in both
    same = table[(table.component == "resid_pre") & (table.layer == 0) & (table.position > 0)]
    assert same["attribution"].abs().max() < 1e-6 and same["patching"].abs().max() < 1e-5


def test_tables_and_normalization(one_thread):
    hm = tiny_model("gpt2")
    positions, heads = attribution_patching(hm, BASE, SOURCE, target="France", foil="Italy", layers=[0, 2])
    n_tokens = len(BASE.split())
    assert len(positions) == 3 * 2 * n_tokens and len(heads) == 2 * hm.layout.n_heads
    scale = positions.source_value[0] - positions.base_value[0]
    torch.testing.assert_close(torch.tensor(positions.normalized.to_numpy()),
                               torch.tensor(positions.attribution.to_numpy() / scale))


@pytest.mark.parametrize("bad, match", [
    (dict(components=("mlp_act",)), "mlp_act"),
    (dict(layers=[7]), "3 layers"),
    (dict(source="Rome is in the"), "same token count"),
])
def test_bad_arguments_name_the_fix(bad, match):
    hm = tiny_model("llama")
    kwargs = dict(target="France", foil="Italy", source=SOURCE) | bad
    source = kwargs.pop("source")
    with pytest.raises(ValueError, match=match):
        attribution_patching(hm, BASE, source, **kwargs)
