"""Cost curves of patching: a patched forward vs the plain forward as the work grows (SmolLM2-135M).

Three curves, each varying one knob from the default point (batch 4, 64 tokens, 1 intervened
layer):

  sequence length   16, 32, 64, 128, 256 tokens (quick: 16, 64, 256)
  batch size        1, 2, 4, 8, 16 (quick: 1, 4, 16)
  intervened layers 1, 2, 4, 8, 16, 30 layers with a patch (quick: 1, 8, 30)

  plain    hm.model(input_ids, attention_mask, use_cache=False): the Hugging Face forward
  patched  hm.run(batch, plan): a resid_pre Patch at every token of each intervened layer
           (layers spread evenly over the 30), source values precomputed once
           (``PlanItem(..., source_values=(B, T, d))``) so only the patched forward is timed

The two alternate within every repetition (plain, patched, then patched, plain, ...); medians
over the repetitions, under torch.no_grad and a fixed torch thread count. Writes
``benchmarks/results/patch_cost_curves.html`` (plotly, one panel per knob: median ms of both
and their ratio), a PNG beside it when kaleido can render, and the JSON contract rows
(one per point: ratio = patched / plain) to ``--json``.

    .venv/bin/python benchmarks/patch_cost_curves.py --json benchmarks/results/patch_cost_curves.json
    .venv/bin/python benchmarks/patch_cost_curves.py --quick --threads 1 --json /tmp/curves.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench import Patch, PlanItem, Site, load_model  # noqa: E402
from workbench.runs import atomic_write  # noqa: E402

DEFAULT = {"tokens": 64, "batch": 4, "layers": 1}
KNOBS = {"tokens": ([16, 32, 64, 128, 256], [16, 64, 256]), "batch": ([1, 2, 4, 8, 16], [1, 4, 16]),
         "layers": ([1, 2, 4, 8, 16, 30], [1, 8, 30])}
LABELS = {"tokens": "sequence length (tokens)", "batch": "batch size", "layers": "intervened layers"}
GOAL = 1.10  # a patch should cost little beyond the forward it rides on


def measure(hm, tokens: int, batch: int, layers: int, reps: int) -> tuple[list[float], list[float], float]:
    """Interleaved timings (ms) of the plain and the patched forward at one point; max |diff|."""
    gen = torch.Generator().manual_seed(tokens * 1000 + batch * 10 + layers)
    ids = torch.randint(100, 40000, (batch, tokens), generator=gen).to(hm.device)  # (B, T)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    chosen = sorted({round(i * (hm.n_layers - 1) / max(layers - 1, 1)) for i in range(layers)})
    sites = [Site(layer, "resid_pre") for layer in chosen]
    with torch.no_grad():
        own = hm.cache(inputs, sites)  # (B, T, d) each: the base's own states (a patch that must change nothing)
        plan = [PlanItem(site, "all", Patch(), source_values=own[site]) for site in sites]
        plain = lambda: hm.model(**inputs, use_cache=False).logits  # noqa: E731
        patched = lambda: hm.run(inputs, plan)  # noqa: E731
        diff = (plain() - patched()).abs().max().item()  # patching in the base's own states: 0
        times = {"plain": [], "patched": []}
        for rep in range(reps + 1):
            order = ("plain", "patched") if rep % 2 == 0 else ("patched", "plain")
            for name in order:
                start = time.perf_counter()
                (plain if name == "plain" else patched)()
                if rep > 0:  # the first repetition warms up
                    times[name].append((time.perf_counter() - start) * 1000)
    return times["plain"], times["patched"], diff


def figure(curves: dict):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=3, subplot_titles=[LABELS[k] for k in curves] + ["ratio"] * 3,
                        shared_xaxes="columns", vertical_spacing=0.12)
    for col, (knob, points) in enumerate(curves.items(), start=1):
        xs = [p["x"] for p in points]
        for name, color in (("plain", "#636efa"), ("patched", "#ef553b")):
            fig.add_scatter(x=xs, y=[p[name] for p in points], name=name, mode="lines+markers",
                            line={"color": color}, showlegend=col == 1, row=1, col=col)
        fig.add_scatter(x=xs, y=[p["patched"] / p["plain"] for p in points], name="patched / plain",
                        mode="lines+markers", line={"color": "#00cc96"}, showlegend=col == 1, row=2, col=col)
        fig.update_xaxes(title_text=LABELS[knob], type="log" if knob != "layers" else "linear", row=2, col=col)
    fig.update_yaxes(title_text="median ms", type="log", row=1, col=1)
    fig.update_yaxes(title_text="patched / plain", row=2, col=1)
    fig.update_layout(title="Patched forward vs plain forward, SmolLM2-135M (default: batch 4, 64 tokens, 1 layer)",
                      height=700, width=1200)
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 points per curve, 5 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per point (default 9; quick 5)")
    parser.add_argument("--json", default=None, help="write the results here (atomically)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "patch_cost_curves"),
                        help="figure path without suffix (.html, .png)")
    args = parser.parse_args()
    reps = args.reps or (5 if args.quick else 9)
    torch.set_num_threads(args.threads)
    hm = load_model("smollm2-135m")
    notes = [f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); SmolLM2-135M "
             f"{hm.model.config._attn_implementation} attention, {reps} interleaved repetitions per point"]
    rows, curves = [], {}
    for knob, (full, quick) in KNOBS.items():
        curves[knob] = []
        for x in quick if args.quick else full:
            point = {**DEFAULT, knob: x}
            plain, patched, diff = measure(hm, point["tokens"], point["batch"], point["layers"], reps)
            p, q = statistics.median(plain), statistics.median(patched)
            curves[knob].append({"x": x, "plain": p, "patched": q})
            work = f"patched forward, {point['batch']} x {point['tokens']} tokens, {point['layers']} layer(s) patched"
            rows.append({"work": work, "method": "workbench", "median_ms": round(q, 2), "baseline": "plain forward",
                         "baseline_median_ms": round(p, 2), "ratio": round(q / p, 4), "goal": f"<= {GOAL}",
                         "met": q / p <= GOAL, "n": reps})
            if diff != 0:
                notes.append(f"{work}: patching the base's own states changed logits by {diff:.3g}")
            print(f"{LABELS[knob]:26s} {x:5d}: plain {p:9.2f} ms  patched {q:9.2f} ms  ratio {q / p:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(curves)
    atomic_write(out.with_suffix(".html"), lambda tmp: fig.write_html(tmp, include_plotlyjs="cdn"))
    try:
        png = fig.to_image(format="png")  # kaleido; needs a Chrome it can find
        atomic_write(out.with_suffix(".png"), lambda tmp: Path(tmp).write_bytes(png))
        notes.append(f"figure: {out.with_suffix('.html').name}, {out.with_suffix('.png').name}")
    except Exception as error:  # noqa: BLE001 - any rendering failure leaves the HTML and JSON
        notes.append(f"figure: {out.with_suffix('.html').name} only (PNG not rendered: {type(error).__name__}: "
                     f"{str(error).splitlines()[0][:120] if str(error) else ''})")
    notes.append("curves: " + json.dumps(curves))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        payload = {"benchmark": "patch_cost_curves", "threads": torch.get_num_threads(), "quick": args.quick,
                   "rows": rows, "notes": notes}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
