"""ReFT on the real SmolLM2-135M-Instruct: identity, a few training steps, save/load generations."""

from __future__ import annotations

import pytest
import torch

from reft import LoReFT, ReftConfig, TrainConfig, generate, get_reft_model, load_reft, persona_pairs, tokenize_pairs, train
from reft.generate import prompt_batch

pytestmark = pytest.mark.slow


def test_identity_is_bit_exact_on_smollm2(smollm2):
    reft = get_reft_model(smollm2, ReftConfig(layers=(5, 20), rank=4, positions="f3+l3"))
    for module in reft.modules():
        if isinstance(module, LoReFT):
            module.set_identity()
    batch = prompt_batch(smollm2.tokenizer, ["Who are you?", "What is the capital of France?"])  # chat template
    with torch.no_grad():
        assert torch.equal(smollm2.forward(batch, use_cache=False).logits, reft(**batch).logits)


def test_persona_training_steps_and_save_load(smollm2, tmp_path):
    torch.manual_seed(0)
    reft = get_reft_model(smollm2, ReftConfig(layers=(20, 26), rank=4, positions="f3+l3"))
    rows = tokenize_pairs(smollm2.tokenizer, persona_pairs()[:4])
    assert smollm2.tokenizer.decode(rows[0]["input_ids"][rows[0]["prompt_length"] - 3:rows[0]["prompt_length"]]) \
        == "assistant\n"  # l3 = the assistant header ("ass", "istant", "\\n"), as at generation time
    result = train(reft, rows, TrainConfig(epochs=6, batch_size=4, lr=2e-2, warmup_ratio=0, progress=False))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    reft.save(tmp_path / "persona")
    again = load_reft(tmp_path / "persona", smollm2)
    prompts = ["Who are you?", "What is 2 plus 2?"]
    assert generate(reft, prompts, max_new_tokens=8) == generate(again, prompts, max_new_tokens=8)
    assert generate(again, prompts[:1], max_new_tokens=3)[0].startswith("Ahoy")
