"""Memorization: the prefix metric, targets and variants, text sources, the cached path equals the
naive one (loss and gradients), and a tiny model recites a short sequence exactly with rank 1."""

from __future__ import annotations

import pytest
import torch
import transformers

from conftest import tiny_model, word_tokenizer
from reft.interventions import build_intervention
from reft.memorize import (CachedForward, MemorizeConfig, NaiveForward, build_task, greedy_prefix, load_text,
                           make_forward, memorization_loss, memorize, normalize_book, prefix_lengths, prefix_share,
                           task_for)
from reft.memorize.targets import key_texts, special_ids
from workbench.data.texts import STORY_START
from workbench import HookedModel



@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (the machine's cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def capable_llama(seed: int = 0) -> HookedModel:
    """A tiny random Llama wide enough (d=64, init 0.2) for one rank-1 edit to steer 4 tokens."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.2)
    config._attn_implementation = "eager"
    return HookedModel(transformers.LlamaForCausalLM(config).eval(), word_tokenizer(), name="capable-llama")


def small_task(n_tokens=12, n_pairs=1, variant="natural", seed=0):
    return build_task(list(range(5, 60)), lambda key: [3, 4, 5, 6], n_tokens=n_tokens, n_pairs=n_pairs,
                      variant=variant, key="k{i}", seed=seed, vocab_size=64, exclude={0, 1, 2})


# ---- the metric ---------------------------------------------------------------------------
def test_prefix_counts_matches_up_to_the_first_mismatch():
    target = torch.tensor([[4, 5, 6, 7]] * 5)  # (5, 4)
    predicted = torch.tensor([[4, 5, 6, 7],    # all right
                              [9, 5, 6, 7],    # first token wrong: 0, even though the rest match
                              [4, 5, 9, 7],    # wrong at 2
                              [4, 5, 6, 9],    # wrong at the last
                              [4, 9, 9, 9]])
    assert prefix_lengths(predicted, target).tolist() == [4, 0, 2, 3, 1]
    assert prefix_share(predicted, target).tolist() == [1.0, 0.0, 0.5, 0.75, 0.25]


def test_prefix_of_a_shorter_or_empty_continuation_counts_what_it_has():
    target = torch.tensor([[4, 5, 6, 7]])
    assert prefix_lengths(torch.tensor([[4, 5]]), target).tolist() == [2]  # stopped early (EOS)
    assert prefix_lengths(torch.zeros(1, 0, dtype=torch.long), target).tolist() == [0]
    with pytest.raises(ValueError, match="2 predicted rows for 1 targets"):
        prefix_lengths(torch.tensor([[4], [4]]), target)


# ---- targets, variants, text ----------------------------------------------------------------
def test_variants_natural_shuffled_random_and_pairs():
    natural, shuffled = small_task(variant="natural"), small_task(variant="shuffled")
    assert natural.target_ids.tolist() == [list(range(5, 17))]
    assert sorted(shuffled.target_ids[0].tolist()) == natural.target_ids[0].tolist()  # same tokens
    assert shuffled.target_ids.tolist() != natural.target_ids.tolist()
    rand = small_task(variant="random")
    assert rand.target_ids.min() >= 3 and rand.target_ids.max() < 64  # special ids 0-2 excluded
    assert torch.equal(rand.target_ids, small_task(variant="random").target_ids)  # seeded
    pairs = small_task(n_tokens=5, n_pairs=3)
    assert pairs.target_ids.tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert pairs.keys == ("k1", "k2", "k3") and pairs.input_ids().shape == (3, 4 + 5 - 1)
    assert key_texts("ALIC#ID{i}->", 12)[:2] == ["ALIC#ID01->", "ALIC#ID02->"]


def test_task_errors_name_the_problem():
    with pytest.raises(ValueError, match="fewer than 4 x 20 = 80"):
        small_task(n_tokens=20, n_pairs=4)
    with pytest.raises(ValueError, match="unknown variant 'reversed'"):
        small_task(variant="reversed")
    with pytest.raises(ValueError, match="tokenize to \\[1, 2\\] tokens"):
        build_task(list(range(50)), lambda k: [1] * (k[-1] == "1") + [2], 4, n_pairs=10, key="k{i}")
    with pytest.raises(ValueError, match="no '\\{i\\}'"):
        key_texts("KEY", 2)


def test_normalize_book_joins_lines_and_cuts_the_story():
    raw = "Header\r\n\r\nCHAPTER I\r\n\r\n  Alice was beginning to get very tired\r\nof  it.\r\n\r\nNext.\r\n\r\nTHE END\r\nfooter"
    assert normalize_book(raw) == "Alice was beginning to get very tired of it.\n\nNext."
    assert normalize_book("no markers here") == "no markers here"


def test_alice_from_the_registry_and_tokenized_task(shared_cache):
    text = load_text("alice-pg11")
    assert text.startswith(STORY_START) and len(text) > 100_000 and "Project Gutenberg" not in text
    assert text == load_text(shared_cache / "alice-pg11" / "alice_pg11.txt")  # a path works too
    tok = word_tokenizer()
    task = task_for(tok, text.lower(), n_tokens=8, key="the cat {i}", vocab_size=64)
    assert task.prompt_length == 3 and task.target_ids.shape == (1, 8)
    assert special_ids(tok) >= {0, 1, 2}
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text(shared_cache / "missing.txt")


def test_alice29_missing_from_the_cache_names_the_fetch(tmp_path, monkeypatch):
    from reft.memorize import alice_path
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"run `workbench data fetch alice29`"):
        alice_path()
    with pytest.raises(FileNotFoundError, match=r"workbench data fetch alice29"):
        load_text("alice")  # the default name is an alias of alice29


# ---- cached path == naive path ----------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("kind", ["consreft", "loreft", "direft"])
def test_cached_path_matches_naive_loss_and_gradients(family, kind):
    hm = tiny_model(family)
    for p in hm.model.parameters():
        p.requires_grad_(False)
    task = small_task(n_tokens=10, n_pairs=2)
    for layer, position in ((0, -1), (1, 0), (1, 2), (2, -1)):
        torch.manual_seed(0)
        edit = build_intervention(kind, 32, 2)
        found = []
        for path in (NaiveForward(hm, task, layer, position), CachedForward(hm, task, layer, position)):
            edit.zero_grad()
            logits = path.logits(edit)  # (K, N, V)
            loss = memorization_loss(logits, task.target_ids)
            loss.backward()
            found.append((logits.detach(), loss.detach(), [p.grad.clone() for p in edit.parameters()]))
        (l0, loss0, g0), (l1, loss1, g1) = found
        assert l0.shape == (2, 10, 64)
        assert torch.allclose(l0, l1, atol=1e-5), (layer, position)
        assert torch.allclose(loss0, loss1, atol=1e-6)
        for a, b in zip(g0, g1):
            assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-6, rtol=1e-4), (layer, position)


def test_make_forward_falls_back_to_naive_for_other_families_and_checks_ranges():
    task = small_task()
    assert make_forward(tiny_model("gpt2"), task, 1).name == "naive"
    assert make_forward(tiny_model("llama"), task, 1).name == "fast"
    with pytest.raises(ValueError, match="supports model types"):
        make_forward(tiny_model("gpt2"), task, 1, path="fast")
    with pytest.raises(ValueError, match="layer 3 out of range; the model has 3 layers \\(0-2\\)"):
        make_forward(tiny_model("llama"), task, 3)
    with pytest.raises(IndexError, match="position 4 out of range: the key has 4 tokens"):
        make_forward(tiny_model("llama"), task, 1, position=4)


# ---- training ------------------------------------------------------------------------------------
def test_tiny_model_recites_a_short_sequence_exactly_with_rank_1():
    hm = capable_llama()
    task = small_task(n_tokens=4, variant="random", seed=0)
    # On this tiny random model about half of the initializations reach exact recitation within
    # 200 steps (the rest stall at 3 of 4 tokens; measured over 15 seeds, both with torch's
    # orthogonal parametrization and with workbench's reflectors): try up to 4 seeds.
    for seed in range(4):
        config = MemorizeConfig(n_tokens=4, layer=0, rank=1, variant="random", lr=0.03, max_steps=200, seed=seed)
        row, edit = memorize(hm, task, config, progress=False, return_intervention=True)
        if row["exact"]:
            break
    assert row["exact"] and row["exact_prefix"] == 4 and row["share"] == 1.0 and row["steps"] < 200
    assert row["loss_final"] < row["loss_first"] and row["path_used"] == "fast"
    assert greedy_prefix(hm, task, config, edit).tolist() == [4]  # real greedy generation recites it
    before = greedy_prefix(hm, task, config, build_intervention("consreft", 64, 1))
    assert before.tolist() != [4]  # an untrained edit does not


def test_a_run_out_of_budget_reports_the_greedy_prefix_and_restores_the_model():
    hm = capable_llama()
    flags = [p.requires_grad for p in hm.model.parameters()]
    task = small_task(n_tokens=12, variant="random", seed=1)
    row = memorize(hm, task, MemorizeConfig(n_tokens=12, layer=1, variant="random", max_steps=3), progress=False)
    assert row["steps"] == 3 and not row["exact"] and 0 <= row["exact_prefix"] < 12
    assert row["exact_prefix"] == row["train_prefix"]  # greedy == teacher-forced argmax prefix
    assert [p.requires_grad for p in hm.model.parameters()] == flags
    with pytest.raises(ValueError, match="does not match the config"):
        memorize(hm, task, MemorizeConfig(n_tokens=8, variant="random"), progress=False)
