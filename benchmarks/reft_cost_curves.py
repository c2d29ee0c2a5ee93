"""Cost curves of a ReFT training step: time vs sequence length, batch size and intervened layers.

One axis varies at a time around the reference point (rank-4 LoReFT, f1+l1 untied, batch 8 x seq
64, layers 1,3, all-token labels) on the random Llama of benchmarks/reft_bench_worker.py (d=256,
4 layers, vocab 32,000) or SmolLM2-135M (``--model smollm2``). Each point starts one worker that
builds the workbench ReFT model and the hand-written ``register_forward_hook`` LoReFT beside it;
steps interleave (workbench, hook, then hook, workbench, ...) and the medians go into the table.
The hook is the cost floor of an intervention on top of the frozen model: its curve next to ours
shows where any overhead grows (per token, per example or per layer).

Writes the contract's JSON (``--json``; rows: workbench vs the hook at each point) and a plotly
figure plus its table under ``benchmarks/results/`` (``reft_cost_curves.html``/``.json``).

    .venv/bin/python benchmarks/reft_cost_curves.py --reps 10 --threads 1
    .venv/bin/python benchmarks/reft_cost_curves.py --quick --json runs/reft-curves.json   # ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reft_step_time import Worker  # noqa: E402  (the lockstep worker protocol)

REFERENCE = {"seq": 64, "batch": 8, "layers": "1,3"}
AXES = {"seq": [16, 32, 64, 128, 256], "batch": [1, 2, 4, 8, 16], "layers": ["0", "0,1", "0,1,2", "0,1,2,3"]}
QUICK_AXES = {"seq": [32, 128], "batch": [2, 8], "layers": ["0", "0,1,2,3"]}


def measure(model: str, point: dict, reps: int, warmup: int, threads: int) -> dict:
    """Median step seconds of workbench and the hand-written hook at one point."""
    common = ["--model", model, "--labels", "all", "--threads", str(threads), "--seq", str(point["seq"]),
              "--batch", str(point["batch"]), "--layers", point["layers"]]
    worker = Worker("workbench", ["workbench", "hook"], common)
    times = {"workbench": [], "hook": []}
    try:
        for rep in range(warmup + reps):
            for method in (("workbench", "hook") if rep % 2 == 0 else ("hook", "workbench")):
                seconds = worker.ask(f"step {method}")["seconds"]
                if rep >= warmup:
                    times[method].append(seconds)
    finally:
        worker.close()
    return {name: statistics.median(t) for name, t in times.items()}


def figure(table: list[dict]):
    """Three panels (seq, batch, layers): step ms of workbench and the hook."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = {"seq": "sequence length", "batch": "batch size", "layers": "intervened layers"}
    fig = make_subplots(rows=1, cols=3, subplot_titles=[titles[a] for a in AXES])
    for col, axis in enumerate(AXES, start=1):
        points = [r for r in table if r["axis"] == axis]
        x = [r["x"] for r in points]
        for method, dash in (("workbench", None), ("hook", "dot")):
            fig.add_trace(go.Scatter(x=x, y=[r[f"{method}_ms"] for r in points], mode="lines+markers",
                                     name=method, legendgroup=method, showlegend=col == 1,
                                     line={"dash": dash}), row=1, col=col)
        fig.update_xaxes(title_text=titles[axis], row=1, col=col)
    fig.update_yaxes(title_text="step ms (median)", row=1, col=1)
    fig.update_layout(title="ReFT step cost (rank-4 LoReFT, f1+l1 untied, all-token labels)")
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random", choices=["random", "smollm2"])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="two points per axis, 5 reps")
    parser.add_argument("--json", help="write the contract's JSON (benchmarks/README.md) here, atomically")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"),
                        help="folder for reft_cost_curves.html and .json")
    args = parser.parse_args()
    from workbench.runs import atomic_write

    axes = QUICK_AXES if args.quick else AXES
    reps = min(args.reps, 5) if args.quick else args.reps
    table = []
    for axis, values in axes.items():
        for value in values:
            point = {**REFERENCE, axis: value}
            med = measure(args.model, point, reps, args.warmup, args.threads)
            x = len(value.split(",")) if axis == "layers" else value
            row = {"axis": axis, "x": x, **point, "workbench_ms": round(1000 * med["workbench"], 2),
                   "hook_ms": round(1000 * med["hook"], 2), "ratio": round(med["workbench"] / med["hook"], 4)}
            table.append(row)
            print(json.dumps(row), flush=True)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = "reft_cost_curves-quick" if args.quick else "reft_cost_curves"
    meta = {"model": args.model, "threads": args.threads, "reps": reps, "reference": REFERENCE, "table": table}
    atomic_write(results / f"{stem}.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    html = figure(table).to_html(include_plotlyjs="cdn")
    atomic_write(results / f"{stem}.html", lambda tmp: Path(tmp).write_text(html))
    if args.json:
        rows = [{"work": f"ReFT step ({args.model}, seq {r['seq']}, batch {r['batch']}, layers {r['layers']})",
                 "method": "workbench", "median_ms": r["workbench_ms"], "baseline": "hand-written hook",
                 "baseline_median_ms": r["hook_ms"], "ratio": r["ratio"], "goal": "<= 1.02",
                 "met": r["ratio"] <= 1.02, "n": reps} for r in table]
        payload = {"benchmark": "reft_cost_curves", "threads": args.threads, "quick": args.quick, "rows": rows,
                   "notes": [f"one axis at a time around {REFERENCE}; interleaved; medians of {reps}; figure "
                             f"{results / (stem + '.html')}"]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    print(f"wrote {results / (stem + '.html')} and .json" + (f", {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
