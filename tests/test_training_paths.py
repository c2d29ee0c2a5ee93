"""Training-path fixes: autograd-safe writes at per-head sites, no duplicate slots, tokenizer state,
weight decay by module type, and kilobyte checkpoints (with format-1 checkpoints still loading)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from conftest import tiny_model, word_tokenizer
from reft import LoReFT, ReftConfig, get_reft_model, load_reft
from reft.hf_trainer import ReftTrainer
from reft.train import no_decay_names, parameter_groups
from workbench import HookedModel, PlanItem
from workbench.das import LowRankRotatedSpaceIntervention, RotatedSpaceIntervention
from workbench.orthogonal import OrthonormalRows, orthonormal_parameter_names
from workbench.positions import FirstLast


def llama(attn: str) -> HookedModel:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.2)
    config._attn_implementation = attn
    return HookedModel(transformers.LlamaForCausalLM(config).eval(), word_tokenizer(), name=f"llama-{attn}")


@pytest.mark.parametrize("site", ["L1.z", "L1.head2.z"])
@pytest.mark.parametrize("length", [1, 4])
def test_per_head_sites_train_under_sdpa(site, length):
    """SDPA keeps its output for backward and o_proj's input views it when T = 1: writing there
    in place broke backward. The gradient must equal eager attention's."""
    grads = {}
    for attn in ("sdpa", "eager"):
        hm = llama(attn)
        torch.manual_seed(1)
        edit = LoReFT(hm.site_size(site), 2)
        ids = torch.arange(5, 5 + length)[None]  # (1, T)
        with hm.intervene([PlanItem(site, "all", edit)]):
            loss = hm.model(input_ids=ids).logits.float().logsumexp(-1).sum()
        loss.backward()
        grads[attn] = edit.learned_source.weight.grad.clone()
    torch.testing.assert_close(grads["sdpa"], grads["eager"], rtol=1e-4, atol=1e-6)


def test_overlapping_first_and_last_slots_write_each_token_once():
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    pos = FirstLast(2, 2).resolve(ids, mask)  # 3 tokens: token 1 is among the first two and the last two
    valid = pos.index[pos.mask].tolist()
    assert sorted(valid) == [0, 1, 2] and len(valid) == len(set(valid))
    # the gradient of a shared edit counts token 1 once (duplicates would double it)
    hm = tiny_model("llama")
    edit = nn.Parameter(torch.zeros(32))

    class Shift(LoReFT):
        def forward(self, base, source=None):
            return base + edit

    item = PlanItem("L0.resid_post", FirstLast(2, 2), Shift(32, 1))
    with hm.intervene([item]):
        hm.model(input_ids=ids).logits[0, -1, 0].backward()
    twice = edit.grad.clone()
    edit.grad = None
    with hm.intervene([PlanItem("L0.resid_post", "all", Shift(32, 1))]):  # every token once
        hm.model(input_ids=ids).logits[0, -1, 0].backward()
    torch.testing.assert_close(twice, edit.grad)


def test_tokenize_and_generate_leave_the_tokenizer_as_found():
    hm = tiny_model("llama")
    tok = hm.tokenizer
    tok.pad_token, tok.padding_side = None, "right"
    hm.tokenize(["the cat", "the cat sat on"])
    hm.generate(["the cat", "the cat sat on"], max_new_tokens=2)
    assert tok.pad_token is None and tok.padding_side == "right"
    tok.pad_token, tok.padding_side = "<pad>", "left"
    hm.tokenize(["the cat", "a dog"], padding_side="right")
    assert tok.pad_token == "<pad>" and tok.padding_side == "left"


class TwoEdits(nn.Module):
    """A module holding DAS rows under names no string rule knows."""

    def __init__(self) -> None:
        super().__init__()
        self.first = LowRankRotatedSpaceIntervention(8, 2)
        self.other = nn.ModuleDict({"x": RotatedSpaceIntervention(8, 3)})
        self.head = nn.Linear(8, 2)


def test_weight_decay_skips_orthonormal_parameters_by_module_type():
    model = TwoEdits()
    names = orthonormal_parameter_names(model)
    assert names == {"first.rotation.reflectors", "other.x.rotation.reflectors"}
    decayed, kept = parameter_groups(model, 0.1)
    assert {id(p) for p in decayed["params"]} == {id(model.head.weight)}
    assert no_decay_names(model) == names | {"head.bias"}
    trainer = ReftTrainer.__new__(ReftTrainer)  # only the method under test, no training set-up
    assert set(trainer.get_decay_parameter_names(model)) == {"head.weight"}


def test_weight_decay_leaves_rows_orthonormal_and_trained():
    """AdamW with decay on a LoReFT: R stays orthonormal and moves (torch's parametrization collapsed)."""
    edit = LoReFT(16, 2)
    opt = torch.optim.AdamW(parameter_groups(edit, 0.5), lr=1e-2)
    before = edit.rotation.weight.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        edit(torch.randn(4, 1, 16)).pow(2).sum().backward()
        opt.step()
    assert edit.rotation.max_orthonormality_error() < 1e-5
    assert not torch.allclose(edit.rotation.weight, before)


def test_rows_are_orthonormal_cheap_and_exactly_settable():
    rows = OrthonormalRows(4096, 4)
    assert rows.max_orthonormality_error() < 1e-5
    assert sum(t.numel() for t in rows.state_dict().values()) == 2 * 4 * 4096 + 4  # no d x d buffer
    full = OrthonormalRows(48, 48).set_(torch.eye(48))
    assert torch.equal(full.weight, torch.eye(48))
    q = torch.linalg.qr(torch.randn(48, 5))[0].T  # (5, 48)
    assert float((OrthonormalRows(48, 5).set_(q).weight - q).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="not orthonormal"):
        OrthonormalRows(8, 2).set_(torch.ones(2, 8))


def test_a_rank4_loreft_checkpoint_at_d4096_weighs_under_200_kb(tmp_path):
    config = transformers.LlamaConfig(vocab_size=16, hidden_size=4096, intermediate_size=8, num_hidden_layers=1,
                                      num_attention_heads=32, num_key_value_heads=1, max_position_embeddings=8)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    hm = HookedModel(model.to_empty(device="cpu"), word_tokenizer())
    reft = get_reft_model(hm, ReftConfig(layers=(0,), rank=4, positions="l1"))
    reft.save(tmp_path / "big")
    size = (tmp_path / "big" / "interventions.safetensors").stat().st_size
    assert size < 200_000, size


def legacy_checkpoint(tmp_path, hm) -> tuple:
    """A format-1 folder as the previous version wrote it: R as torch's parametrization (d x d base)."""
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=3, positions="f1+l1"))
    reft.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "reft_config.json").read_text())
    meta["format"] = "workbench-reft/1"
    (tmp_path / "old" / "reft_config.json").write_text(json.dumps(meta))
    from safetensors.torch import load_file, save_file
    state, old = load_file(str(tmp_path / "old" / "interventions.safetensors")), {}
    rows = {}
    for key, value in state.items():
        if ".rotation." not in key:
            old[key] = value
            continue
        prefix = key.split(".rotation.")[0]
        if prefix in rows:
            continue
        legacy = orthogonal(nn.Linear(32, 3, bias=False), orthogonal_map="householder")
        rows[prefix] = legacy.weight.detach().clone()
        for name, tensor in legacy.state_dict().items():
            old[f"{prefix}.rotate.linear.{name}"] = tensor.contiguous()
    save_file(old, str(tmp_path / "old" / "interventions.safetensors"))
    return rows, old


def test_format_1_checkpoints_load_with_the_same_rows(tmp_path):
    hm = tiny_model("llama")
    rows, old = legacy_checkpoint(tmp_path, hm)
    assert any(v.shape == (32, 32) for v in old.values())  # the d x d buffer the old format kept
    loaded = load_reft(tmp_path / "old", hm)
    for prefix, weight in rows.items():
        module = loaded.get_submodule(prefix)
        assert float((module.rotation.weight - weight).abs().max()) < 1e-6
    meta = json.loads((tmp_path / "old" / "reft_config.json").read_text())
    meta["format"] = "workbench-reft/0"
    (tmp_path / "old" / "reft_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 'workbench-reft/0'; this version reads 'workbench-reft/2'"):
        load_reft(tmp_path / "old", hm)


def test_import_datasets_from_the_repository_root_is_hugging_faces():
    """The cards folder datasets/ has no package in it; Python would still make it a namespace
    package if Hugging Face's datasets were missing, and the HF Trainer would then break."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "import sys; sys.path.insert(0, sys.argv[1]); import datasets; print(hasattr(datasets, 'Dataset'))"
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, cwd=root, check=True)
    assert done.stdout.strip() == "True"
