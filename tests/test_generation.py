"""Generation with interventions against a no-cache, token-by-token reference.

The reference never uses a KV cache or padding: for every new token it reruns the whole
(unpadded, single-example) sequence with ``use_cache=False``, applies the intervention with a
hand-written forward hook at absolute positions, and takes the greedy argmax. With a KV cache,
``mode="prompt"`` intervenes in the prefill only, which is the same thing, because later tokens see
the prompt's intervened keys and values; ``mode="every_step"`` also intervenes on every token
fed in while decoding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_model
from workbench import AddVector, Patch, PlanItem

MAX_NEW = 6
LAYER = 1
PROMPTS = ["the cat sat on the mat", "a dog", "I loved the movie , it was great"]  # 6, 2, 8 tokens
SOURCES = ["it was bad", "a dog sat in a city", "Rome"]
# single: one prompt; padded: different lengths (left-padded by hm.generate); equal: a batch that
# needs no padding. Each case: (prompts, the sources for a Patch, one per prompt).
CASES = {
    "single": (["I loved the movie , it was great"], ["it was bad"]),
    "padded": (PROMPTS, SOURCES),
    "equal": (["I loved the movie , it was great", "the cat sat on the mat in Rome"], ["it was bad", "a dog"]),
}
GEN_FAMILIES = ("llama", "gpt2", "gpt_neox", "gemma2")

# Regression guard: when no prompt needs padding, transformers' generate passes no attention
# mask, so decode steps must be told apart by the KV cache, not by the mask's width ("single" and
# "equal" cases below).


def _prompts(case):
    prompts, sources = CASES[case]
    return (prompts[0] if case == "single" else prompts), prompts, sources


def block_of(model: nn.Module, family: str, layer: int) -> nn.Module:
    """The decoder block whose output is the residual stream (HF paths, written out here)."""
    if family == "gpt2":
        return model.transformer.h[layer]
    if family == "gpt_neox":
        return model.gpt_neox.layers[layer]
    return model.model.layers[layer]


def _first(value):
    return value if isinstance(value, torch.Tensor) else value[0]


def _replace_first(value, tensor):
    return tensor if isinstance(value, torch.Tensor) else (tensor, *value[1:])


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def hook_snapshot(model: nn.Module) -> list[tuple[str, int, int]]:
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks]


@torch.no_grad()
def read_block_output(model, module: nn.Module, ids: list[int], position: int) -> torch.Tensor:
    """The module's output at one absolute position of an unpadded run, (d,)."""
    saved = {}

    def grab(_m, _a, output):
        saved["h"] = _first(output)[0, position].detach().clone()

    handle = module.register_forward_hook(grab)
    try:
        model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        handle.remove()
    return saved["h"]


@torch.no_grad()
def reference_generate(model, module: nn.Module, prompt_ids: list[int], edit, every_step: bool,
                       prompt_positions: list[int], max_new: int, eos_id: int | None) -> list[int]:
    """Greedy, no cache, one example. ``edit(h)`` maps a (d,) state to its intervened value.

    ``prompt_positions`` are absolute positions in the prompt; with ``every_step`` every generated
    token that is fed back in is edited too.
    """
    seq = list(prompt_ids)
    new: list[int] = []
    for _ in range(max_new):
        positions = list(prompt_positions)
        if every_step:
            positions += list(range(len(prompt_ids), len(seq)))

        def hook(_m, _a, output):
            hidden = _first(output).clone()  # (1, T, d)
            for p in positions:
                hidden[0, p] = edit(hidden[0, p])
            return _replace_first(output, hidden)

        handle = module.register_forward_hook(hook) if edit is not None else None
        try:
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits  # (1, T, V)
        finally:
            if handle is not None:
                handle.remove()
        token = int(logits[0, -1].argmax())
        new.append(token)
        seq.append(token)
        if eos_id is not None and token == eos_id:
            break
    return new


def as_batch(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Rows that stopped at EOS are padded, as generate does for finished sequences."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])


def absolute(index: list[int], length: int) -> list[int]:
    return [i % length for i in index]


@torch.no_grad()
def steering(hm, family: str) -> torch.Tensor:
    """A fixed random direction, scaled to twice the mean residual norm at the site.

    Large enough that it changes greedy tokens in every family (tiny random residual streams have
    norms from ~0.15 to ~10), small enough that it does not drown the rest of the stream.
    """
    ids = torch.tensor([ids_of(hm.tokenizer, PROMPTS[0])])
    norm = read_all(hm.model, block_of(hm.model, family, LAYER), ids).norm(dim=-1).mean()
    vector = torch.randn(hm.model.config.hidden_size, generator=torch.Generator().manual_seed(1))  # (d,)
    return 2.0 * float(norm) * vector / vector.norm()  # (d,)


@torch.no_grad()
def read_all(model, module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    saved = {}
    handle = module.register_forward_hook(lambda _m, _a, out: saved.setdefault("h", _first(out).clone()))
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return saved["h"]  # (1, T, d)


def _expected(hm, family, prompts, edit_for, positions, every_step):
    """Reference ids (B, new) for ``prompts``; ``edit_for(i)`` gives example i's edit function."""
    module = block_of(hm.model, family, LAYER)
    eos = hm.model.generation_config.eos_token_id
    rows = []
    for i, prompt in enumerate(prompts):
        ids = ids_of(hm.tokenizer, prompt)
        rows.append(reference_generate(hm.model, module, ids, edit_for(i), every_step,
                                       absolute(positions, len(ids)), MAX_NEW, eos))
    return as_batch(rows, hm.tokenizer.pad_token_id)


# ---- plain generation: the reference agrees with hm.generate without a plan ---------------------
@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("case", CASES)
def test_plain_generation_matches_reference(family, case):
    hm = tiny_model(family)
    inputs, prompts, _ = _prompts(case)
    want = _expected(hm, family, prompts, lambda i: None, [], False)
    got = hm.generate(inputs, max_new_tokens=MAX_NEW)["ids"]
    assert torch.equal(got, want), f"{family}: generate {got.tolist()} != unpadded reference {want.tolist()}"


# ---- mode="prompt": AddVector ------------------------------------------------------------------
@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("positions", ["l1", [0, -1]], ids=["l1", "0,-1"])
@pytest.mark.parametrize("case", CASES)
def test_prompt_steering_matches_no_cache_reference(family, positions, case):
    hm = tiny_model(family)
    inputs, prompts, _ = _prompts(case)
    vector = steering(hm, family)
    assert hook_snapshot(hm.model) == []
    plan = [PlanItem(f"L{LAYER}.resid_post", positions, AddVector(vector, scale=1.0))]
    got = hm.generate(inputs, plan, max_new_tokens=MAX_NEW)["ids"]
    assert hook_snapshot(hm.model) == []

    index = [-1] if positions == "l1" else positions
    want = _expected(hm, family, prompts, lambda i: (lambda h: h + vector), index, False)
    assert torch.equal(got, want), f"got {got.tolist()}, reference {want.tolist()}"


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_steering_changes_generated_tokens(family):
    """The intervention is not a no-op: steering changes the greedy continuation, and steering
    every step differs from steering the prompt only."""
    hm = tiny_model(family)
    plan = [PlanItem(f"L{LAYER}.resid_post", [0, -1], AddVector(steering(hm, family)))]
    plain = hm.generate(PROMPTS, max_new_tokens=MAX_NEW)["ids"]
    steered = hm.generate(PROMPTS, plan, max_new_tokens=MAX_NEW)["ids"]
    every = hm.generate(PROMPTS, plan, mode="every_step", max_new_tokens=MAX_NEW)["ids"]
    assert not torch.equal(plain, steered)
    assert not torch.equal(steered, every)
    assert hook_snapshot(hm.model) == []


# ---- mode="prompt": Patch with sources ----------------------------------------------------------
@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("case", CASES)
def test_prompt_patch_matches_no_cache_reference(family, case):
    """Patch L1.resid_post at each prompt's last token with its source's last-token state."""
    hm = tiny_model(family)
    inputs, prompts, sources = _prompts(case)
    plan = [PlanItem(f"L{LAYER}.resid_post", "l1", Patch())]
    got = hm.generate(inputs, plan, sources=[sources[0] if case == "single" else sources],
                      max_new_tokens=MAX_NEW)["ids"]
    assert hook_snapshot(hm.model) == []

    module = block_of(hm.model, family, LAYER)
    states = [read_block_output(hm.model, module, ids_of(hm.tokenizer, s), -1) for s in sources]  # (d,) each
    want = _expected(hm, family, prompts, lambda i: (lambda h: states[i]), [-1], False)
    assert torch.equal(got, want), f"got {got.tolist()}, reference {want.tolist()}"


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_patch_changes_generated_tokens(family):
    hm = tiny_model(family)
    plan = [PlanItem(f"L{LAYER}.resid_post", "l1", Patch())]
    plain = hm.generate(PROMPTS, max_new_tokens=MAX_NEW)["ids"]
    patched = hm.generate(PROMPTS, plan, sources=[SOURCES], max_new_tokens=MAX_NEW)["ids"]
    assert not torch.equal(plain, patched)
    assert hook_snapshot(hm.model) == []


# ---- mode="every_step" --------------------------------------------------------------------------
@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("positions", ["l1", [0, -1], "f2"], ids=["l1", "0,-1", "f2"])
@pytest.mark.parametrize("case", CASES)
def test_every_step_steering_matches_no_cache_reference(family, positions, case):
    hm = tiny_model(family)
    inputs, prompts, _ = _prompts(case)
    vector = steering(hm, family)
    plan = [PlanItem(f"L{LAYER}.resid_post", positions, AddVector(vector))]
    got = hm.generate(inputs, plan, mode="every_step", max_new_tokens=MAX_NEW)["ids"]
    assert hook_snapshot(hm.model) == []

    index = [-1] if positions == "l1" else [0, 1] if positions == "f2" else positions
    want = _expected(hm, family, prompts, lambda i: (lambda h: h + vector), index, True)
    assert torch.equal(got, want), f"got {got.tolist()}, reference {want.tolist()}"


def test_every_step_rejects_source_interventions_and_leaves_no_hooks():
    hm = tiny_model("llama")
    with pytest.raises(ValueError, match="every_step"):
        hm.generate("the cat sat", [PlanItem("L1.resid_post", "l1", Patch())], sources=["a dog"],
                    mode="every_step")
    assert hook_snapshot(hm.model) == []


def test_failing_generation_leaves_no_hooks():
    """An error inside generate (a position past the prompt) still removes every hook."""
    hm = tiny_model("llama")
    plan = [PlanItem("L1.resid_post", [40], AddVector(torch.ones(32)))]
    with pytest.raises(IndexError):
        hm.generate("the cat sat", plan, max_new_tokens=2)
    assert hook_snapshot(hm.model) == []



def test_generation_progress_ticks_once_per_new_token_and_changes_nothing(monkeypatch):
    """``progress=True`` ticks a bar once per new token and generates the same ids."""
    from workbench import progress

    counts = []
    close = progress.TokenProgress.close
    monkeypatch.setattr(progress.TokenProgress, "close", lambda self: (counts.append(self.bar.n), close(self)))
    hm = tiny_model("llama")
    plain = hm.generate(["the cat", "a dog sat"], max_new_tokens=5)["ids"]
    shown = hm.generate(["the cat", "a dog sat"], max_new_tokens=5, progress=True)["ids"]
    assert torch.equal(plain, shown)
    assert counts == [shown.shape[1]] == [5]
