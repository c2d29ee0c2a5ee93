"""The nnsight backend's cost next to the hooks backend: the same plan, the same logits.

For each model, on a batch of 8 x 64 random token ids under torch.no_grad:

  hooks    hm.run(batch, plan, sources=[source])                       (the baseline)
  nnsight  hm.run(batch, plan, sources=[source], backend="nnsight")

with two plans: a patch at the middle layer's last token (read from a source run, so each call
is one stopped source pass plus one patched forward), and a rank-4 LoReFT at the middle layer
(f1+l1, no source run). Calls are interleaved (A B, then B A, ...) with a fixed torch thread
count; the script prints medians and the ratio nnsight / hooks. Before timing it checks that both
backends give bit-identical logits (the max |diff| goes into the notes).

    .venv/bin/python benchmarks/nnsight_backend.py                 # 1 thread, 20 reps, both models
    .venv/bin/python benchmarks/nnsight_backend.py --quick --json runs/nnsight.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench import HookedModel, Patch, PlanItem, load_model  # noqa: E402
from workbench.runs import atomic_write  # noqa: E402


def random_llama() -> HookedModel:
    """A random-init Llama: 4 layers, d=256, vocab 32,000, eval mode, no tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
    return HookedModel(LlamaForCausalLM(config).eval(), None, name="random-llama-4x256")


def random_batch(vocab: int, seed: int, batch: int = 8, seq: int = 64) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))  # (B, T)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def plans(hm: HookedModel) -> dict[str, list[PlanItem]]:
    from reft.interventions import LoReFT

    mid = hm.n_layers // 2
    torch.manual_seed(1)
    return {"patch (source run)": [PlanItem(f"L{mid}.resid_post", "l1", Patch())],
            "LoReFT r=4 (f1+l1)": [PlanItem(f"L{mid}.resid_post", "f1+l1", LoReFT(hm.site_size(f"L{mid}.resid_post"), 4))]}


@torch.no_grad()
def measure(hm: HookedModel, reps: int, warmup: int) -> tuple[list[dict], list[str]]:
    vocab = hm.model.get_input_embeddings().weight.shape[0]
    base, source = random_batch(vocab, 0), random_batch(vocab, 1)
    rows, notes = [], []
    for work, plan in plans(hm).items():
        calls = {"hooks": lambda: hm.run(base, plan, sources=[source]),
                 "nnsight": lambda: hm.run(base, plan, sources=[source], backend="nnsight")}
        diff = (calls["hooks"]() - calls["nnsight"]()).abs().max().item()
        notes.append(f"{hm.name}, {work}: max |nnsight - hooks| = {diff:g}")
        for _ in range(warmup):
            for fn in calls.values():
                fn()
        times = {name: [] for name in calls}
        for rep in range(reps):
            order = list(calls) if rep % 2 == 0 else list(calls)[::-1]
            for name in order:
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
        ours, base_ms = (1000 * statistics.median(times[n]) for n in ("nnsight", "hooks"))
        rows.append({"work": f"{work}, {hm.name}, batch 8 x 64", "method": "nnsight backend",
                     "median_ms": round(ours, 2), "baseline": "hooks backend", "baseline_median_ms": round(base_ms, 2),
                     "ratio": round(ours / base_ms, 4), "goal": None, "met": None, "n": reps})
        print(f"{hm.name:24s} {work:22s} hooks {base_ms:8.1f} ms  nnsight {ours:8.1f} ms  "
              f"ratio {ours / base_ms:.3f}  (max |diff| {diff:g})")
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the random model only, 8 reps")
    parser.add_argument("--json", help="write the results here (benchmarks/README.md's contract)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 8 if args.quick else args.reps
    models = [random_llama] + ([] if args.quick else [lambda: load_model("smollm2-135m")])
    rows, notes = [], [f"torch {torch.__version__}, {args.threads} thread(s), medians of {reps} interleaved calls"]
    for build in models:
        found, more = measure(build(), reps, warmup=2)
        rows += found
        notes += more
    if args.json:
        text = json.dumps({"benchmark": "nnsight_backend", "threads": args.threads, "quick": args.quick,
                           "rows": rows, "notes": notes}, indent=2)
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
