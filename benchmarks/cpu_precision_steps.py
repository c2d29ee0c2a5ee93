"""LoReFT step ratios on the CPU in fp32 and bf16: workbench vs plain fwd+bwd vs a hand-written hook.

The GPU suite's two configurations (rank 4 at two layers, f1+l1 untied; rank 8 at every layer,
f7+l7 tied) on a CPU-sized random Llama (the peers README's reference: d=256, 4 layers, vocab
32,000, batch 8 x seq 64), interleaved, medians, 1 torch thread by default. Ratios in one run are
what to compare; absolute times on shared 2-core machines vary.

    .venv/bin/python benchmarks/cpu_precision_steps.py --reps 15
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_common import LlamaShape, lm_batch, random_llama  # noqa: E402
from _gpu_timing import time_loreft  # noqa: E402

SHAPE = LlamaShape(d=256, layers=4, vocab=32000, heads=4, kv_heads=4, intermediate=688)
CONFIGS = {"two_layer": dict(layers=(1, 3), rank=4, first=1, last=1, tied=False),
           "all_layer": dict(layers=(0, 1, 2, 3), rank=8, first=7, last=7, tied=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument("--out", default=f"benchmarks/results/cpu-precision-{date.today()}.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, results = torch.device("cpu"), {"threads": args.threads, "shape": SHAPE.describe(), "runs": {}}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for dtype_name in args.dtypes.split(","):
        model = random_llama(SHAPE, dtypes[dtype_name], device)
        batch = lm_batch(SHAPE.vocab, 8, 64, device)
        for name in args.configs.split(","):
            config = CONFIGS[name]
            timed = time_loreft(model, batch, name, warmup=1, reps=args.reps, deadline=time.monotonic() + 1e9, **config)
            results["runs"][f"{dtype_name}/{name}"] = {"median_ms": timed["median_ms"], "ratios": timed["ratios"],
                                                       "reps": timed["reps"]}
            r = timed["ratios"]
            print(f"{dtype_name} {name}: workbench/plain_fwd_bwd {r['workbench/plain_fwd_bwd']}, "
                  f"workbench/hand_hook {r['workbench/hand_hook']}, hand_hook/plain {r['hand_hook/plain_fwd_bwd']}, "
                  f"medians {timed['median_ms']}", flush=True)
            out.write_text(json.dumps(results, indent=2))  # after each config: a cut run keeps its results
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
