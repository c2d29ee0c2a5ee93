"""DAS training step: workbench vs pyvene 0.1.8's ``LowRankRotatedSpaceIntervention``.

Same model (SmolLM2-135M, fp32), same counterfactual batch (base/source city prompts, label =
the source city's country), same site (layer L block output = ``L.resid_post``, the entity's
token), same rank k, Adam, cross-entropy on the last token. One step = forward with the
intervention + backward + optimizer step. Four variants run in separate processes, interleaved
step by step (A B C D A B C D ...), torch threads pinned:

- ``workbench``: the training default: source states at the site and the base inputs' states
  below it cached once (``workbench.das.cached``), so a step runs only the layers above the site
  and the LM head on the answer position
- ``workbench-sources``: only the source states cached (the full base forward every step)
- ``workbench-uncached``: a source forward every step (what pyvene does)
- ``pyvene``: ``IntervenableModel`` with ``LowRankRotatedSpaceIntervention`` (peer venv)

    .venv/bin/python benchmarks/das_vs_pyvene.py --steps 10 --threads 1 --json runs/das.json
    .venv/bin/python benchmarks/das_vs_pyvene.py --quick --json runs/das.json   # ~1 min

The peer venv is ``.peers/pyreft`` (see ../shared/peers/README.md). pyvene's transformers 4.45
cannot read the cached model's config (``quantization_config: null``), so its worker builds the
Llama from the config dict and loads the safetensors weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".peers" / "pyreft" / "bin" / "python"


WORKERS = ("workbench", "workbench-sources", "workbench-uncached", "pyvene")


# ---- workers (each runs in its own process and venv) -----------------------------------------
def _serve(step) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        started = time.perf_counter()
        loss = step()
        print(json.dumps({"ms": 1000 * (time.perf_counter() - started), "loss": loss}), flush=True)


def worker_workbench(spec: dict, cached: bool, cache_base: bool = False) -> None:
    import torch
    import torch.nn.functional as F

    from workbench import load_model
    from workbench.das import (BaseStates, CounterfactualData, LowRankRotatedSpaceIntervention, intervened_logits,
                               source_states)

    torch.set_num_threads(spec["threads"])
    hm = load_model(spec["model_dir"])
    for p in hm.model.parameters():
        p.requires_grad_(False)
    n = len(spec["base_ids"])
    data = CounterfactualData(spec["base_ids"], [[p] for p in spec["base_pos"]], spec["source_ids"],
                              [[p] for p in spec["source_pos"]], torch.tensor(spec["labels"]))
    site = f"L{spec['layer']}.resid_post"
    torch.manual_seed(0)
    das = LowRankRotatedSpaceIntervention(hm.site_size(site), spec["k"])
    opt = torch.optim.Adam(das.parameters(), lr=1e-2)
    states = source_states(hm, site, data) if cached else None
    base = BaseStates(hm, site, data) if cache_base else None  # once per input, as TrainConfig(cache_base=True)
    index = torch.arange(n)

    def step():
        logits = intervened_logits(hm, site, das, data, index, states, base)  # (B, V)
        loss = F.cross_entropy(logits, data.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    _serve(step)


def worker_pyvene(spec: dict) -> None:
    import pyvene as pv
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(spec["threads"])
    folder = Path(spec["model_dir"])
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**config))
    state = load_file(str(folder / "model.safetensors"))
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=False)
    model.eval()
    d = model.config.hidden_size
    torch.manual_seed(0)
    intervention = pv.LowRankRotatedSpaceIntervention(embed_dim=d, low_rank_dimension=spec["k"])
    iv_config = pv.IntervenableConfig(representations=[{
        "layer": spec["layer"], "component": "block_output", "low_rank_dimension": spec["k"],
        "intervention": intervention}])
    iv = pv.IntervenableModel(iv_config, model)
    iv.set_device("cpu")
    iv.disable_model_gradients()
    opt = torch.optim.Adam(intervention.parameters(), lr=1e-2)
    base = {"input_ids": torch.tensor(spec["base_ids"])}
    base["attention_mask"] = torch.ones_like(base["input_ids"])
    source = {"input_ids": torch.tensor(spec["source_ids"])}
    source["attention_mask"] = torch.ones_like(source["input_ids"])
    locations = {"sources->base": ([[[p] for p in spec["source_pos"]]], [[[p] for p in spec["base_pos"]]])}
    labels = torch.tensor(spec["labels"])

    def step():
        _, out = iv(base, [source], locations)
        loss = F.cross_entropy(out.logits[:, -1], labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    _serve(step)


# ---- driver ------------------------------------------------------------------------------------
def build_spec(args) -> dict:
    """One equal-length batch: single-token cities in one template, so no padding on either side."""
    from workbench.data import answer_token, city_dataset, entity_last_token
    from workbench.models import prepare_default_model
    from transformers import AutoTokenizer

    model_dir = prepare_default_model()
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = city_dataset(min_population=1_000_000)
    template = "The city of %s is in the country of"
    found = {e: entity_last_token(tok, template, e) for e in data.entities()}
    single = [e for e, f in found.items() if f is not None and f[2] == 1]
    length = {len(found[e][0]) for e in single}.pop()
    single = [e for e in single if len(found[e][0]) == length]
    pairs = [(b, s) for b, s in zip(single, single[1:] + single[:1])
             if data.attributes[b]["Country"] != data.attributes[s]["Country"]][: args.batch_size]
    if len(pairs) < args.batch_size:
        raise ValueError(f"only {len(pairs)} single-token city pairs; lower --batch-size to at most that")
    return {"model_dir": str(model_dir), "threads": args.threads, "layer": args.layer, "k": args.k,
            "base_ids": [found[b][0] for b, _ in pairs], "base_pos": [found[b][1] for b, _ in pairs],
            "source_ids": [found[s][0] for _, s in pairs], "source_pos": [found[s][1] for _, s in pairs],
            "labels": [answer_token(tok, template, data.attributes[s]["Country"]) for _, s in pairs],
            "seq_len": length}


def _peer_version() -> str:
    try:
        out = subprocess.run([str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('pyvene'))"],
                             capture_output=True, text=True, timeout=120)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_json(path: str, payload: dict) -> None:
    from workbench.runs import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="measured steps per variant (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layer", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--out", default="runs/bench-das-vs-pyvene")
    parser.add_argument("--json", help="write the contract's JSON (benchmarks/README.md) here, atomically")
    parser.add_argument("--quick", action="store_true", help="5 measured steps (about a minute)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        if args.worker == "pyvene":
            worker_pyvene(spec)
        else:
            worker_workbench(spec, cached=args.worker != "workbench-uncached", cache_base=args.worker == "workbench")
        return 0
    if args.quick:
        args.steps, args.warmup = min(args.steps, 5), 1
    notes = []
    peer = (ROOT / ".peers" / "pyreft" / ".ready").exists() and PEER_PYTHON.exists()
    if not peer:
        notes.append(f"peer venv missing: {PEER_PYTHON} (benchmarks/setup_peers.sh installs it); no pyvene baseline")
    spec = build_spec(args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    pythons = {name: sys.executable for name in WORKERS if name != "pyvene"}
    if peer:
        pythons["pyvene"] = str(PEER_PYTHON)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    procs = {name: subprocess.Popen([py, __file__, "--worker", name, "--spec", f.name], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for name, py in pythons.items()}
    times: dict[str, list[float]] = {name: [] for name in procs}
    losses: dict[str, list[float]] = {name: [] for name in procs}
    try:
        for name, proc in procs.items():
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
            if not line:
                raise RuntimeError(f"worker {name} exited before it was ready (see its stderr above)")
        for i in range(args.warmup + args.steps):
            for name, proc in procs.items():  # interleaved: A B C A B C ...
                proc.stdin.write("step\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline())
                if i >= args.warmup:
                    times[name].append(reply["ms"])
                losses[name].append(reply["loss"])
            print(f"step {i}: " + ", ".join(f"{n} {times[n][-1] if times[n] else float('nan'):.0f} ms"
                                            for n in procs), flush=True)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(timeout=60)
        os.remove(f.name)
    medians = {n: statistics.median(t) for n, t in times.items()}
    baseline = medians.get("pyvene")
    work = (f"DAS step (SmolLM2 L{args.layer}.resid_post, k={args.k}, batch {args.batch_size} x "
            f"{spec['seq_len']} tokens, fp32)")
    goals = {"workbench": "<= 0.5"}  # issue 12: at most half of pyvene's step on the same batch
    rows = []
    for name in (n for n in WORKERS if n != "pyvene"):
        ratio = None if baseline is None else medians[name] / baseline
        goal = goals.get(name)
        rows.append({"work": work, "method": name, "median_ms": round(medians[name], 1),
                     "baseline": "pyvene", "baseline_median_ms": None if baseline is None else round(baseline, 1),
                     "ratio": None if ratio is None else round(ratio, 4), "goal": goal,
                     "met": None if ratio is None or goal is None else ratio <= float(goal.split()[-1]),
                     "n": args.steps})
    first = {n: v[0] for n, v in losses.items()}
    notes.append(f"first-step losses (same batch; the workbench variants share R's init and must agree, "
                 f"pyvene draws its own R): {json.dumps(first)}")
    notes.append(f"interleaved steps, {args.warmup} warm-up, medians of {args.steps}; torch threads {args.threads}")
    if peer:
        notes.append(f"pyvene {_peer_version()} in .peers/pyreft")
    result = {"benchmark": "das", "threads": args.threads, "quick": args.quick, "rows": rows, "notes": notes,
              "batch_size": args.batch_size, "seq_len": spec["seq_len"], "layer": args.layer, "k": args.k,
              "median_ms": medians, "step_ms": times}
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    if args.json:
        _write_json(args.json, result)
    for row in rows:
        print(f"{row['method']:>20}: {row['median_ms']:8.1f} ms  vs pyvene {row['baseline_median_ms']} ms  "
              f"ratio {row['ratio']}  goal {row['goal']}")
    print("\n".join(notes))
    print(f"wrote {out / 'results.json'}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
