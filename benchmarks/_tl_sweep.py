r"""TransformerLens 4.3 side of benchmarks/sweep_vs_peers.py (runs in the peer venv .peers/tl).

Loads a local Hugging Face folder through ``TransformerBridge.boot_transformers`` and times the
layer x position resid_pre patching sweep the TransformerLens way: one ``run_with_cache`` on the
source ("clean" in TL's words) plus ``transformer_lens.patching.get_act_patch_resid_pre`` on the
base ("corrupted"), which runs one forward per cell. Timing excludes model loading.

Every result is one stdout line ``@@JSON {...}`` with ``seconds`` and ``grid`` (layers x
positions of logit(target) - logit(foil) at the last token); other stdout lines are noise to skip.

Standalone (prints ``--rounds`` results):
    .peers/tl/bin/python benchmarks/_tl_sweep.py --path ~/.cache/workbench/smollm2-135m \
        --base-ids 38634,314,281,260,1798,282 --source-ids 46292,314,281,260,1798,282 \
        --target 4649 --foil 7158 --rounds 1
With ``--serve`` it prints a ready line, then answers each ``run`` line on stdin with one result
and exits on ``quit`` (how sweep_vs_peers.py interleaves it with in-process runs).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # get_act_patch_* draws a progress bar per sweep

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402


def emit(payload: dict) -> None:
    print("@@JSON " + json.dumps(payload), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="TransformerLens resid_pre patching sweep timing")
    parser.add_argument("--path", required=True, help="local Hugging Face model folder (with tokenizer)")
    parser.add_argument("--base-ids", required=True, help="comma-separated token ids of the base prompt")
    parser.add_argument("--source-ids", required=True, help="comma-separated token ids of the source prompt")
    parser.add_argument("--target", type=int, required=True, help="token id of the target")
    parser.add_argument("--foil", type=int, required=True, help="token id of the foil")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="standalone mode: timed sweeps to run")
    parser.add_argument("--serve", action="store_true", help="answer 'run' lines on stdin")
    args = parser.parse_args()

    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.patching import get_act_patch_resid_pre
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    hf_model = AutoModelForCausalLM.from_pretrained(args.path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.path)
    bridge = TransformerBridge.boot_transformers(args.path, hf_model=hf_model, tokenizer=tokenizer)
    bridge.eval()
    load_seconds = time.perf_counter() - start

    base = torch.tensor([[int(i) for i in args.base_ids.split(",")]])  # (1, T) "corrupted" in TL terms
    source = torch.tensor([[int(i) for i in args.source_ids.split(",")]])  # (1, T) "clean" in TL terms

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, args.target] - logits[0, -1, args.foil]  # scalar

    @torch.no_grad()
    def sweep() -> dict:
        t0 = time.perf_counter()
        _, clean_cache = bridge.run_with_cache(source)
        grid = get_act_patch_resid_pre(bridge, base, clean_cache, metric)  # (layers, positions)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "grid": grid.tolist()}

    with torch.no_grad():
        base_value, source_value = float(metric(bridge(base))), float(metric(bridge(source)))
    emit({"ready": True, "load_seconds": load_seconds, "threads": torch.get_num_threads(),
          "torch": torch.__version__, "transformer_lens": version("transformer-lens"),
          "base_value": base_value, "source_value": source_value})
    if not args.serve:
        for _ in range(args.rounds):
            emit(sweep())
        return
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command == "run":
            emit(sweep())
        else:
            emit({"error": f"unknown command {command!r}: expected run or quit"})


if __name__ == "__main__":
    main()
