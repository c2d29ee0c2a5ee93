"""Cost of one patched forward relative to the plain Hugging Face forward.

What it measures, per model (the real SmolLM2-135M and a random 4-layer d=256 Llama, vocab
32,000), on a batch of 8 x 64 random token ids:

  plain       model(input_ids, attention_mask, use_cache=False)           (the baseline, A)
  precomputed hm.run(batch, [PlanItem(L{mid}.resid_post, "l1", Patch(),
                                      source_values=(8, 1, d) tensor)])  (B1)
  source_run  hm.run(batch, [PlanItem(L{mid}.resid_post, "l1", Patch())],
                     sources=[source_batch])                             (B2: includes the source
                                                                          forward, stopped after
                                                                          layer mid)

The three are interleaved in every repetition (A B1 B2, then B2 B1 A, ...), under torch.no_grad
and a fixed torch thread count; the script prints medians, the ratio of medians to the plain
forward, and the median of the per-repetition ratios. Before timing it checks that a patch whose
source values are the base's own states leaves the logits bit-identical, and that precomputed
source values give the same logits as the source run.

Run from the repository root:

    .venv/bin/python benchmarks/patched_forward.py                # 1 thread, 30 reps (SmolLM2)
    .venv/bin/python benchmarks/patched_forward.py --threads 2 --reps 50 --models random
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable

import torch

from workbench import HookedModel, Patch, PlanItem, load_model


def random_llama() -> HookedModel:
    """A random-init Llama: 4 layers, d=256, vocab 32,000, eval mode, no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    return HookedModel(model, None, name="random-llama-4x256")


def random_batch(vocab: int, batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)  # (B, T)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn every repetition (order alternates)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for rep in range(reps):
        for name, fn in (items if rep % 2 == 0 else items[::-1]):
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def check_correctness(hm: HookedModel, batch, source_batch, site: str) -> None:
    with torch.no_grad():
        plain = hm.model(**batch, use_cache=False).logits  # (B, T, V)
        own = hm.cache(batch, [site], positions="l1")[PlanItem(site).site]  # (B, 1, d)
        same = hm.run(batch, [PlanItem(site, "l1", Patch(), source_values=own)])
        source_values = hm.cache(source_batch, [site], positions="l1")[PlanItem(site).site]  # (B, 1, d)
        pre = hm.run(batch, [PlanItem(site, "l1", Patch(), source_values=source_values)])
        run = hm.run(batch, [PlanItem(site, "l1", Patch())], sources=[source_batch])
    print(f"  check: patch with the base's own states == plain forward (bit-identical): "
          f"{torch.equal(same, plain)}  (max |diff| {(same - plain).abs().max().item():.3g})")
    print(f"  check: precomputed source values == source run: {torch.equal(pre, run)}  "
          f"(max |diff| {(pre - run).abs().max().item():.3g}); the patch moves the logits by "
          f"max {(pre - plain).abs().max().item():.3g}")


def bench(hm: HookedModel, reps: int, warmup: int, batch_size: int, seq: int) -> None:
    vocab = hm.model.config.vocab_size
    mid = hm.n_layers // 2
    site = f"L{mid}.resid_post"
    batch = random_batch(vocab, batch_size, seq, seed=1)
    source_batch = random_batch(vocab, batch_size, seq, seed=2)
    n_params = sum(p.numel() for p in hm.model.parameters())
    print(f"\n== {hm.name}: {n_params / 1e6:.1f}M params, {hm.n_layers} layers, d={hm.layout.d_model}; "
          f"batch {batch_size} x seq {seq}; patch at {site}, positions l1; {reps} reps, {warmup} warmup")
    check_correctness(hm, batch, source_batch, site)
    with torch.no_grad():
        source_values = hm.cache(source_batch, [site], positions="l1")[PlanItem(site).site]  # (B, 1, d)
        fns = {
            "plain": lambda: hm.model(**batch, use_cache=False).logits,
            "precomputed": lambda: hm.run(batch, [PlanItem(site, "l1", Patch(), source_values=source_values)]),
            "source_run": lambda: hm.run(batch, [PlanItem(site, "l1", Patch())], sources=[source_batch]),
        }
        times = interleaved(fns, reps, warmup)
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = statistics.median(t / a for t, a in zip(ts, times["plain"]))
        print(f"  {name:12s} median {med * 1e3:9.2f} ms  (min {min(ts) * 1e3:9.2f})  "
              f"ratio to plain: {med / base:.3f}  (median of per-rep ratios {paired:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions for SmolLM2 (>= 30)")
    parser.add_argument("--reps-small", type=int, default=100, help="timed repetitions for the random Llama")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--models", default="random,smollm2", help="comma list of: random, smollm2")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}")
    for which in args.models.split(","):
        if which == "random":
            bench(random_llama(), args.reps_small, args.warmup, args.batch, args.seq)
        elif which == "smollm2":
            bench(load_model("smollm2-135m"), args.reps, args.warmup, args.batch, args.seq)
        else:
            raise SystemExit(f"unknown model {which!r}: expected random or smollm2")


if __name__ == "__main__":
    main()
