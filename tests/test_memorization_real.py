"""Memorization on the real SmolLM2-135M: the cached path equals the naive one (sdpa attention,
30 layers), and one rank-1 ConsReFT makes the model recite the opening of Alice exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED_DATA
from reft.interventions import build_intervention
from reft.memorize import CachedForward, MemorizeConfig, NaiveForward, load_text, memorization_loss, memorize, task_for

ALICE = SHARED_DATA / "alice" / "alice_pg11.txt"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ALICE.exists(), reason=f"shared Alice text not found at {ALICE}")]


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine two threads were 4-30x slower per step."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cached_path_matches_naive_on_smollm2(smollm2):
    task = task_for(smollm2.tokenizer, load_text(ALICE), n_tokens=16)
    assert smollm2.tokenizer.decode(task.target_ids[0]).startswith("Alice was beginning")
    flags = [p.requires_grad for p in smollm2.model.parameters()]
    for p in smollm2.model.parameters():
        p.requires_grad_(False)
    try:
        for layer in (15, 28):
            torch.manual_seed(0)
            edit = build_intervention("consreft", 576, 1)
            with torch.no_grad():
                edit.learned_source.fill_(20.0)  # a visible edit
            found = []
            for path in (NaiveForward(smollm2, task, layer), CachedForward(smollm2, task, layer)):
                edit.zero_grad()
                loss = memorization_loss(path.logits(edit), task.target_ids)
                loss.backward()
                found.append((loss.detach(), [p.grad.clone() for p in edit.parameters()]))
            (loss0, g0), (loss1, g1) = found
            assert torch.allclose(loss0, loss1, atol=1e-4), layer
            for a, b in zip(g0, g1):
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-3), layer
    finally:
        for p, flag in zip(smollm2.model.parameters(), flags):
            p.requires_grad_(flag)


def test_rank_1_consreft_recites_16_tokens_of_alice(smollm2):
    task = task_for(smollm2.tokenizer, load_text(ALICE), n_tokens=16)
    row = memorize(smollm2, task, MemorizeConfig(n_tokens=16, layer=15, max_steps=80), progress=False)
    assert row["exact"] and row["exact_prefix"] == 16 and row["path_used"] == "fast", row
    assert row["steps"] < 80 and row["loss_final"] < row["loss_first"]
