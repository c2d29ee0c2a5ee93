"""Correctness checks of benchmarks/gpu_suite.py, run per dtype on a random Llama (section ``correctness``).

Each check returns a dict with ``passed`` (bool) and what it measured. Exactness where the design
promises it: an empty plan and a patch equal the plain forward / a hand-written hook bit for bit,
save -> load reproduces logits bit for bit. Training checks need the loss to fall; generation and
sweeps are compared with a no-cache reference and with per-cell runs, exactly in fp32 (generation)
or within a tolerance stated in the result (half precision, and sweeps that reuse a prefix cache).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from _gpu_common import CHECK, CHECK_TINY, HandHooks, first_last_groups, lm_batch, random_llama, word_tokenizer


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def check_empty_plan(hm, batch) -> dict:
    with torch.no_grad():
        ours = hm.run({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, [])
        plain = hm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return {"passed": bool(torch.equal(ours, plain)), "max_abs_diff": _maxdiff(ours, plain)}


def check_patch(hm, layer: int, positions: list[int]) -> dict:
    """Patch at L.resid_post vs a register_forward_hook that copies the source's block output."""
    from workbench import Patch, PlanItem, Site
    gen = torch.Generator().manual_seed(7)
    base, source = (torch.randint(3, hm.model.config.vocab_size, (2, 12), generator=gen).to(hm.device) for _ in "ab")
    block, index, saved = hm.model.model.layers[layer], torch.tensor(positions, device=hm.device), {}

    def read(_m, _a, out):
        saved["h"] = (out[0] if isinstance(out, tuple) else out).detach().clone()  # (B, T, d)

    def write(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        h[:, index] = saved["h"][:, index]

    with torch.no_grad():
        handle = block.register_forward_hook(read)
        hm.model(input_ids=source, use_cache=False)
        handle.remove()
        handle = block.register_forward_hook(write)
        hand = hm.model(input_ids=base, use_cache=False).logits
        handle.remove()
        ours = hm.run({"input_ids": base}, [PlanItem(Site(layer, "resid_post"), positions, Patch())],
                      sources=[{"input_ids": source}])
    return {"passed": bool(torch.equal(ours, hand)), "bit_exact": bool(torch.equal(ours, hand)),
            "max_abs_diff": _maxdiff(ours, hand)}


def _reft(hm, layers, rank=4, positions="f1+l1", tied=False):
    from reft import ReftConfig, get_reft_model
    torch.manual_seed(3)
    return get_reft_model(hm, ReftConfig(layers=tuple(layers), rank=rank, positions=positions, tied=tied))


def check_loreft_vs_hand(hm, batch, layers, tol: float) -> dict:
    """The workbench LoReFT loss equals the hand-written hook's at the same R, W, b."""
    reft = _reft(hm, layers)
    hand = HandHooks(hm.model, tuple(layers), first_last_groups(int(batch["prompt_lengths"][0]), 1, 1, False), 4)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            group = reft.intervention_at(layer)
            for edit, ours in zip(hand.edits[i], group.groups):
                edit.R.weight = ours.rotation.weight.float()  # right_inverse of torch's parametrization
                edit.W.weight.copy_(ours.learned_source.weight)
                edit.W.bias.copy_(ours.learned_source.bias.float() + 0.1)
                ours.learned_source.bias.add_(0.1)  # a non-trivial edit (b != 0)
        ours_loss = float(reft(**batch).loss)
        with hand.installed():
            hand_loss = float(hm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       labels=batch["labels"], use_cache=False).loss)
    diff = abs(ours_loss - hand_loss)
    return {"passed": diff <= tol * max(1.0, abs(hand_loss)), "workbench_loss": ours_loss, "hand_loss": hand_loss,
            "abs_diff": diff, "tolerance": tol}


def check_loreft_training(hm, batch, layers, steps: int) -> dict:
    from reft import TrainConfig, train
    from reft.data import Collator
    reft = _reft(hm, layers)
    rows = [{"input_ids": ids.tolist(), "labels": lab.tolist(), "prompt_length": int(p)}
            for ids, lab, p in zip(batch["input_ids"].cpu(), batch["labels"].cpu(), batch["prompt_lengths"].cpu())]
    cfg = TrainConfig(epochs=steps, batch_size=len(rows), lr=1e-2, warmup_ratio=0.0, mixed_precision="no",
                      progress=False)
    history = [h["loss"] for h in train(reft, rows, cfg, collate_fn=Collator(0)).history if "loss" in h]
    return {"passed": history[-1] < history[0], "first_loss": history[0], "last_loss": history[-1],
            "steps": len(history)}, reft


def check_das_training(hm, epochs: int) -> dict:
    from workbench import Site
    from workbench.das import CounterfactualData, LowRankRotatedSpaceIntervention, TrainConfig, train_alignment
    n, vocab, layer = 32, hm.model.config.vocab_size, hm.n_layers - 1
    gen = torch.Generator().manual_seed(5)
    base, source = torch.randint(3, vocab, (n, 8), generator=gen), torch.randint(3, vocab, (n, 8), generator=gen)
    with torch.no_grad():  # label: the source's own next token, which a full swap at the last layer gives
        labels = hm.model(input_ids=source.to(hm.device)).logits[:, -1].argmax(-1).cpu()
    data = CounterfactualData(base.tolist(), [[-1]] * n, source.tolist(), [[-1]] * n, labels)
    param = next(hm.model.parameters())
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(hm.site_size(Site(layer, "resid_post")), k=max(1, hm.model.config.hidden_size // 4),
                                          dtype=param.dtype, device=param.device)
    result = train_alignment(hm, Site(layer, "resid_post"), das, data, None,
                             TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, progress=False))
    per_epoch = result.history.groupby("epoch")["loss"].mean()
    first, last = float(per_epoch.iloc[0]), float(per_epoch.iloc[-1])
    return {"passed": last < first, "first_epoch_loss": first, "last_epoch_loss": last, "epochs": len(per_epoch)}


def check_save_load(hm, reft, batch) -> dict:
    from reft import load_reft, save_reft
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        save_reft(reft, tmp)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        again = load_reft(tmp, hm)
        a = reft(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = again(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    states = all(torch.equal(v, again.state_dict()[k]) for k, v in reft.state_dict().items())
    return {"passed": bool(torch.equal(a, b)) and states, "logits_equal": bool(torch.equal(a, b)),
            "state_equal": states, "max_abs_diff": _maxdiff(a, b), "checkpoint_bytes": size}


def check_generation(hm, reft, new_tokens: int, tie_tol: float) -> dict:
    """Batched, left-padded, KV-cached generation (prompt interventions in the prefill) vs the
    teacher-forced no-cache forward over prompt + generated tokens: greedy, so equal argmaxes at
    every step mean the no-cache greedy loop gives the same tokens. A differing token passes only as
    a near-tie: its reference logit within ``tie_tol`` of the reference maximum (rounding noise).
    Tokens after a row's first EOS are padding and not compared."""
    from reft.generate import generate_ids
    from workbench.padding import left_pad as pad_left
    gen = torch.Generator().manual_seed(9)
    prompts = [torch.randint(3, hm.model.config.vocab_size, (n,), generator=gen).tolist() for n in (7, 10, 5, 10)]
    batch = {k: v.to(hm.device) for k, v in pad_left(prompts, 0).items()}  # (B, P), left-padded
    new = generate_ids(reft, batch, new_tokens)  # (B, n)
    full = torch.cat([batch["input_ids"], new], 1)  # (B, P + n)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(new)], 1)
    with torch.no_grad():
        logits = reft(input_ids=full, attention_mask=mask, prompt_lengths=batch["attention_mask"].sum(1)).logits
    width = batch["input_ids"].shape[1]
    ref = logits[:, width - 1:width - 1 + new.shape[1]].float()  # (B, n, V)
    reference = ref.argmax(-1)  # (B, n)
    eos = getattr(reft.tokenizer, "eos_token_id", None)
    done = (new == eos).long().cumsum(1) if eos is not None else torch.zeros_like(new)  # (B, n)
    live = (done - (new == eos).long() if eos is not None else done) == 0  # up to and with the first EOS
    shortfall = (ref.max(-1).values - ref.gather(-1, new[..., None])[..., 0]) * live  # (B, n): 0 where equal
    non_ties = int((shortfall > tie_tol).sum())
    agree = (reference == new) & live
    return {"passed": non_ties == 0, "equal": bool(agree.sum() == live.sum()),
            "token_agreement": float(agree.sum() / live.sum().clamp(min=1)), "compared_tokens": int(live.sum()), "non_tie_mismatches": non_ties,
            "max_logit_shortfall": float(shortfall.max()), "tie_tolerance": tie_tol, "new_tokens": int(new.shape[1])}


def check_sweep(hm, tol: float) -> dict:
    """patch_sweep (stacked cells, prefix KV cache) vs one hm.run per (layer, position) cell."""
    from workbench import Patch, PlanItem, Site
    from workbench.metrics import logit_difference
    from workbench.sweeps import patch_sweep, single_token_id
    base, source = "Paris is in the country of", "Rome is in the country of"
    metric = logit_difference(single_token_id(hm, "France"), single_token_id(hm, "Italy"))
    df = patch_sweep(hm, base, source, metric=metric, component="resid_pre", batch_size=16)
    singles = []
    with torch.no_grad():
        for row in df.itertuples():
            plan = [PlanItem(Site(int(row.layer), "resid_pre"), [int(row.position)], Patch())]
            logits = hm.run(base, plan, sources=[source])
            singles.append(float(metric(logits, {"attention_mask": torch.ones(1, logits.shape[1], device=hm.device)})[0]))
    values = torch.tensor(df["value"].tolist())
    diff = float((values - torch.tensor(singles)).abs().max())
    scale = float(torch.tensor(singles).abs().max()) + 1e-6
    return {"passed": diff <= tol * max(1.0, scale), "max_abs_diff": diff, "value_scale": scale, "cells": len(df),
            "tolerance": tol}


def check_device_map(hm, batch, tol: float) -> dict:
    """The model dispatched by accelerate over two devices (lower half of the layers on ``hm``'s
    device, the rest and the head on the CPU; with one GPU that is cuda:0 + cpu): each ReFT
    intervention lives on its own site's device, logits match the one-device model and a training
    step sends each gradient to its intervention's device."""
    import copy

    from accelerate import dispatch_model
    from reft.saving import trainable_state

    n = hm.n_layers
    home = hm.device.index if hm.device.type == "cuda" else str(hm.device)
    device_map = {"model.embed_tokens": home, "model.rotary_emb": home, "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": home if i < n // 2 else "cpu" for i in range(n)})
    split = type(hm)(dispatch_model(copy.deepcopy(hm.model), device_map=device_map), hm.tokenizer, name=hm.name)
    layers = (0, n - 1)
    one, two = _reft(hm, layers), _reft(split, layers)
    with torch.no_grad():
        for key, value in trainable_state(one).items():
            trainable_state(two)[key].copy_(value)
    where = {str(layer): {p.device.type for p in two.intervention_at(layer).parameters()} for layer in layers}
    placed = where[str(layers[0])] == {hm.device.type} and where[str(layers[1])] == {"cpu"}
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        a, b = one(**inputs).logits, two(**inputs).logits
    two(**batch).loss.backward()
    grads = all(p.grad is not None and p.grad.device == p.device for p in two.parameters() if p.requires_grad)
    diff = _maxdiff(a, b.to(a.device))
    return {"passed": placed and grads and diff <= tol, "intervention_devices": {k: sorted(v) for k, v in where.items()},
            "gradients_on_their_devices": grads, "max_abs_diff": diff, "tolerance": tol}


def run_checks(dtype: torch.dtype, device: torch.device, tiny: bool, steps: int) -> dict:
    """All checks on one random Llama in ``dtype``; returns {check: result}."""
    from workbench import HookedModel
    shape = CHECK_TINY if tiny else CHECK
    hm = HookedModel(random_llama(shape, dtype, device), word_tokenizer(), name=f"random-llama-d{shape.d}")
    batch = lm_batch(shape.vocab, 4, 16, device)
    half = dtype != torch.float32
    layers = (0, shape.layers - 1)
    out = {"model": shape.describe(),
           "empty_plan": check_empty_plan(hm, batch),
           "patch_vs_hook": check_patch(hm, shape.layers // 2, [1, 4, 11]),
           "loreft_vs_hand_hook": check_loreft_vs_hand(hm, batch, layers, 2e-2 if half else 1e-5)}
    out["loreft_training"], trained = check_loreft_training(hm, batch, layers, steps)
    out["das_training"] = check_das_training(hm, max(2, steps // 4))
    out["save_load"] = check_save_load(hm, trained, batch)
    out["generation"] = check_generation(hm, trained, 6 if tiny else 12, 5e-2 if half else 1e-4)
    out["sweep_vs_cells"] = check_sweep(hm, 5e-2 if half else 1e-4)
    out["device_map"] = check_device_map(hm, batch, 2e-2 if half else 1e-5)
    return out


def failed_checks(results: dict) -> list[str]:
    return [f"{dtype}.{name}" for dtype, checks in results.items() for name, r in checks.items()
            if isinstance(r, dict) and "passed" in r and not r["passed"]]

