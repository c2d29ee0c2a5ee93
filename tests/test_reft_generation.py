"""ReFT generation against a no-cache, hand-applied reference; save/load; the CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from conftest import tiny_model
from reft import LoReFT, ReftConfig, generate, get_reft_model, load_reft, tokenize_pairs, train, TrainConfig
from reft.generate import generate_ids, prompt_batch
from reft.interventions import PerPositionGroups
from reft.saving import fingerprint, read_config
from test_reft_model import learnable_llama

PROMPTS = ["the cat sat on the mat", "a dog", "I loved the movie , it was great"]  # 6, 2, 8 tokens
MAX_NEW = 5


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def block(model: nn.Module, family: str, layer: int) -> nn.Module:
    return model.transformer.h[layer] if family == "gpt2" else model.model.layers[layer]


def by_hand(edit: LoReFT, h: torch.Tensor) -> torch.Tensor:
    """LoReFT from its parameters, written out: h + Rᵀ(W h + b − R h); h (k, d)."""
    R, W, b = edit.rotation.weight, edit.learned_source.weight, edit.learned_source.bias
    return h + (h @ W.T + b - h @ R.T) @ R


@torch.no_grad()
def reference(reft, family: str, ids: list[int], first: int, last: int, eos: int) -> list[int]:
    """Greedy without KV cache or padding: every step reruns the whole sequence with the edit applied
    by hand (a forward hook) at the prompt's first/last positions."""
    n = len(ids)
    seq, new = list(ids), []
    handles = []
    for layer in reft.reft_config.layers:
        iv = reft.intervention_at(layer)
        edits = list(iv.groups) if isinstance(iv, PerPositionGroups) else [iv]
        firsts = [p for p in range(first) if p < n - last]  # a token that is also a last one: last edit only
        slots = [firsts, list(range(n - last, n))] if len(edits) == 2 else [firsts + list(range(n - last, n))]

        def hook(_m, _a, output, edits=edits, slots=slots):
            h = output if isinstance(output, torch.Tensor) else output[0]
            new = [by_hand(edit, h[0, pos]) for edit, pos in zip(edits, slots)]  # all read the unedited h
            for value, pos in zip(new, slots):
                h[0, pos] = value
        handles.append(block(reft.hm.model, family, layer).register_forward_hook(hook))
    try:
        for _ in range(MAX_NEW):
            logits = reft.hm.model(input_ids=torch.tensor([seq]), use_cache=False).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            seq.append(token)
            if token == eos:
                break
    finally:
        for handle in handles:
            handle.remove()
    return new


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("tied", [False, True])
def test_generation_equals_a_no_cache_reference(family, tied):
    hm = tiny_model(family)
    torch.manual_seed(1)
    reft = get_reft_model(hm, ReftConfig(layers=(0, 2), rank=4, positions="f1+l2", tied=tied))
    with torch.no_grad():  # make the edit large enough to change the greedy tokens
        for edit in reft.modules():
            if isinstance(edit, LoReFT):
                edit.learned_source.weight.mul_(8)
    batch = prompt_batch(hm.tokenizer, PROMPTS, chat_template=False)  # left-padded (3, 8)
    assert (batch["attention_mask"] == 0).any()
    got = generate_ids(reft, batch, MAX_NEW)  # (3, new), batched with a KV cache
    eos = hm.tokenizer.eos_token_id
    base = generate_ids(reft, batch, MAX_NEW, intervene=False)
    assert not torch.equal(got, base)  # the intervention changes the generations
    for row, prompt in enumerate(PROMPTS):
        ids = hm.tokenizer(prompt)["input_ids"]
        want = reference(reft, family, ids, first=1, last=2, eos=eos)
        assert got[row, :len(want)].tolist() == want, f"prompt {prompt!r}"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hm.model.modules())


def test_chat_template_prompts_match_training(tmp_path):
    """Generation formats prompts with the same chat template and tokens that training used."""
    hm = tiny_model("llama")
    hm.tokenizer.chat_template = ("{% for m in messages %}<eos> {{ m['content'] }} <eos>{% endfor %}"
                                  "{% if add_generation_prompt %} I{% endif %}")
    rows = tokenize_pairs(hm.tokenizer, [("the cat", "sat")])
    batch = prompt_batch(hm.tokenizer, ["the cat"])
    prompt = rows[0]["input_ids"][:rows[0]["prompt_length"]]
    assert batch["input_ids"][0].tolist() == prompt
    assert hm.tokenizer.decode(prompt) == "<eos> the cat <eos> I"


def test_save_load_reproduces_logits_and_generations(tmp_path):
    hm = learnable_llama()
    torch.manual_seed(0)
    reft = get_reft_model(hm, ReftConfig(layers=(1, 2), rank=3, positions="f1+l1", kind="loreft"))
    rows = tokenize_pairs(hm.tokenizer, [("the cat sat on the mat", "Paris Rome .")], chat_template=False)
    train(reft, rows, TrainConfig(epochs=5, batch_size=1, lr=1e-2, progress=False))
    reft.save(tmp_path / "saved")
    meta = read_config(tmp_path / "saved")
    assert meta["interventions"][0] == {"site": "L1.resid_post", "positions": "f1+l1", "kind": "loreft", "rank": 3,
                                        "groups": [1, 1], "hidden_size": 32}
    assert meta["dtype"] == "float32" and meta["base_model"]["fingerprint"] == fingerprint(hm.model)
    again = load_reft(tmp_path / "saved", learnable_llama())  # a fresh copy of the same base model
    batch = hm.tokenize(PROMPTS)
    with torch.no_grad():
        assert torch.equal(reft(**batch).logits, again(**batch).logits)
    assert generate(reft, PROMPTS, 6, chat_template=False) == generate(again, PROMPTS, 6, chat_template=False)


def test_load_checks_the_base_model_and_follows_its_dtype(tmp_path):
    hm = learnable_llama()
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, kind="direft"))
    reft.save(tmp_path / "saved")
    with pytest.raises(ValueError, match="fingerprint .* pass check_base=False"):
        load_reft(tmp_path / "saved", learnable_llama(seed=5))
    other = learnable_llama(seed=5)
    other.model.to(torch.bfloat16)
    loaded = load_reft(tmp_path / "saved", other, check_base=False)
    assert {p.dtype for p in loaded.parameters() if p.requires_grad} == {torch.float32}  # fp32 master values for a bf16 model
    assert torch.equal(loaded.intervention_at(1).proj.weight, reft.intervention_at(1).proj.weight)  # exact
    with pytest.raises(FileNotFoundError, match="not a saved ReFT model"):
        load_reft(tmp_path, hm)


def test_cli_train_and_generate(tmp_path, monkeypatch, capsys):
    from workbench import models

    from reft.commands import register

    monkeypatch.setattr(models, "load_model", lambda *a, **k: learnable_llama())  # no real model
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": p, "response": r}) for p, r in
                              [("the cat sat on the mat", "Paris Rome ."), ("a dog", "great movie")]))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(["reft", "train", "--dataset", str(data), "--layers", "0,1,2", "--positions", "f1+l1",
                              "--epochs", "60", "--batch-size", "2", "--lr", "3e-2", "--out", str(out),
                              "--prompt", "the cat sat on the mat", "--max-new-tokens", "4"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "reft: Paris Rome ." in text and "trainable params" in text
    record = json.loads((out / "config.json").read_text())
    assert record["generations"][0]["reft"] == "Paris Rome ." and record["reft_config"]["layers"] == [0, 1, 2]
    args = parser.parse_args(["reft", "generate", "--reft", str(out), "--prompt", "a dog", "--compare",
                              "--max-new-tokens", "4"])
    assert args.func(args) == 0
    assert "reft: great movie" in capsys.readouterr().out
