"""Layer-stepped sweeps equal one plain hooked forward per cell (the independent oracle).

Every cell of every sweep is compared with ``hm.run(base, [PlanItem(site, positions, Patch())],
sources=[source])``: a full forward with the workbench's ordinary hooks and no cache.
"""

import pytest
import torch
import transformers

from workbench import HookedModel, Patch, PlanItem, Site
from workbench.layer_steps import BaseRun, Cell, run_cells, stepping_supported, stepping_unsupported_reason
from workbench.metrics import logit_difference, target_probability
from workbench.sweeps import head_sweep, patch_sweep
from conftest import tiny_model, word_tokenizer

BASE, SOURCE = "Paris is in the country of", "Rome is in the city of"


def _metric(hm):
    ids = hm.tokenizer.convert_tokens_to_ids
    return logit_difference(ids("France"), ids("Italy"))


def _oracle(hm, site, positions, metric):
    with torch.no_grad():
        logits = hm.run(BASE, [PlanItem(site, positions, Patch())], sources=[SOURCE])
    return metric(logits, hm.tokenize(BASE)).item()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out"])
def test_stepped_position_sweep_equals_one_forward_per_cell(family, component):
    hm = tiny_model(family, seed=4)
    df = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy", component=component, batch_size=4)
    assert df.attrs["path"] == "stepped"
    metric = _metric(hm)
    for row in df.itertuples():
        assert row.value == pytest.approx(_oracle(hm, Site(row.layer, component), [row.position], metric), abs=1e-5)
    # baselines come from the two cached runs: the unpatched base and source forwards
    assert df["base_value"].iloc[0] == pytest.approx(metric(hm.run(BASE), hm.tokenize(BASE)).item(), abs=1e-5)
    assert df["source_value"].iloc[0] == pytest.approx(metric(hm.run(SOURCE), hm.tokenize(SOURCE)).item(), abs=1e-5)
    assert df["value"].std() > 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_stepped_head_sweep_equals_one_forward_per_cell(family):
    hm = tiny_model(family, seed=5)
    df = head_sweep(hm, BASE, SOURCE, target="France", foil="Italy", batch_size=5)
    assert df.attrs["path"] == "stepped" and len(df) == 3 * 4
    metric = _metric(hm)
    for row in df.itertuples():
        assert row.value == pytest.approx(_oracle(hm, Site(row.layer, "z", head=row.head), "all", metric), abs=1e-5)
    assert df["value"].std() > 0



@pytest.mark.parametrize("component, starts", [("resid_pre", [0]), ("resid_pre", [1, 3]), ("mlp_out", [1, 3])])
def test_the_last_mlp_runs_on_the_read_tokens_only_unless_a_cell_writes_inside_it(component, starts):
    hm = tiny_model("llama", seed=4)
    ids = hm.tokenize(BASE)["input_ids"]  # (1, T)
    n_tokens, width = ids.shape[1], hm.model.config.hidden_size
    base = BaseRun(hm, ids)
    gen = torch.Generator().manual_seed(0)
    cells = [Cell(Site(layer, component), tuple(range(s, n_tokens)), torch.randn(n_tokens - s, width, generator=gen))
             for layer in range(hm.n_layers) for s in starts]
    seen = []
    down = hm.layout.blocks[-1].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _module, args: seen.append(args[0].shape[:-1].numel()))
    try:
        values = run_cells(hm, base, cells, lambda last: last.sum(-1))
    finally:
        handle.remove()
    if component == "resid_pre":  # one token per cell: the one the readout reads
        assert sum(seen) == len(cells)
    else:  # cells at the last layer write mlp_out there: every token of every row runs
        assert sum(seen) == sum(n_tokens - c.start for c in cells)
    assert len(set(values)) == len(cells)


def test_a_metric_of_the_whole_distribution_sees_full_logits():
    hm = tiny_model("qwen2", seed=6)
    france = hm.tokenizer.convert_tokens_to_ids("France")
    metric = target_probability(france)  # a softmax over the vocabulary: needs every logit
    df = patch_sweep(hm, BASE, SOURCE, metric=metric, layers=[0, 2])
    assert df.attrs["path"] == "stepped"
    for row in df.itertuples():
        assert row.value == pytest.approx(_oracle(hm, Site(row.layer, "resid_pre"), [row.position], metric), abs=1e-6)


def test_sliding_window_and_sdpa_masks_come_from_the_model():
    # a window of 3 tokens over a 6-token prompt: the masks differ from plain causal ones
    torch.manual_seed(7)
    config = transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        sliding_window=3)
    config._attn_implementation = "sdpa"
    hm = HookedModel(transformers.AutoModelForCausalLM.from_config(config).eval(), word_tokenizer(), name="tiny-mistral-sw")
    df = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy")
    assert df.attrs["path"] == "stepped"
    metric = _metric(hm)
    for row in df.itertuples():
        assert row.value == pytest.approx(_oracle(hm, Site(row.layer, "resid_pre"), [row.position], metric), abs=1e-5)


def test_unsupported_families_fall_back_and_say_why():
    gemma2, bert = tiny_model("gemma2"), tiny_model("bert")
    assert not stepping_supported(gemma2) and "gemma2" in stepping_unsupported_reason(gemma2)
    assert patch_sweep(gemma2, BASE, SOURCE, target="France", foil="Italy").attrs["path"] == "prefix"
    assert head_sweep(gemma2, BASE, SOURCE, target="France", foil="Italy").attrs["path"] == "copies"
    assert patch_sweep(bert, BASE, SOURCE, target="France", foil="Italy").attrs["path"] == "copies"
    with pytest.raises(ValueError, match="path='stepped' cannot run this model: model type 'gemma2'"):
        patch_sweep(gemma2, BASE, SOURCE, target="France", foil="Italy", path="stepped")
    with pytest.raises(ValueError, match="path='fast': expected one of"):
        patch_sweep(tiny_model("llama"), BASE, SOURCE, target="France", foil="Italy", path="fast")


def test_old_paths_agree_with_the_stepped_one():
    hm = tiny_model("llama", seed=8)
    stepped = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy", component="mlp_out")
    for path in ("prefix", "copies"):
        other = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy", component="mlp_out", path=path)
        assert other.attrs["path"] == path
        assert torch.allclose(torch.tensor(other["value"].to_numpy()), torch.tensor(stepped["value"].to_numpy()),
                              atol=1e-5)
