"""The reproduction report: one row per finding (the paper's figure beside ours, agree or not, and
why), in Markdown and in HTML with plotly figures.

Each study's saved results are read back from the run folder, so the report can be rebuilt at any
time (``workbench reproduce --report-only``) and shows whatever has finished.

>>> verdict(0.80, 0.81, tolerance=0.015)
'agree'
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.runs import atomic_write

PAPERS = {
    "encoder_sst2": ("ReFT (Wu et al., 2024), GLUE on RoBERTa-base",
                     "LoReFT within 0.5 points of LoRA (84.2 vs 84.7 GLUE average) at ~1/10 of its parameters or fewer"),
    "decoder_sst2": ("ReFT (Wu et al., 2024), instruction-tuned decoders",
                     "LoReFT matches or beats LoRA at far fewer parameters"),
    "memorization": ("ReFT memorization (pyreft README / paper appendix), LLaMA-7B",
                     "a rank-1 intervention at one position recites up to 2,048 tokens"),
    "ravel": ("RAVEL (Huang et al., 2024)", "MDAS >= DAS > PCA, probe and mean difference on Disentangle"),
    "sentiment": ("Linear representations of sentiment (Tigges et al., 2023)",
                  "ablating the sentiment direction loses 76% of above-chance SST accuracy"),
}


def verdict(ours: float, target: float, tolerance: float) -> str:
    """'agree' when ``ours`` is at least ``target - tolerance``, else 'disagree'."""
    return "agree" if ours >= target - tolerance else "disagree"


def _summary(folder: Path) -> dict | None:
    path = folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def encoder_row(out: Path):
    s = _summary(out / "encoder_sst2")
    if s is None:
        return None, None
    t = pd.DataFrame(s["table"]).set_index("method")
    fig = go.Figure(go.Bar(x=t.index, y=100 * t.accuracy_mean, error_y=dict(array=100 * t.accuracy_std),
                           text=[f"{v:,} params" for v in t.trainable_params]))
    fig.update_layout(title="Encoder SST-2 dev accuracy (MiniLM-L6, mean ± std over seeds)", yaxis_title="%")
    if not {"loreft", "lora"} <= set(t.index):
        return {"finding": "LoReFT ≈ LoRA (encoder)", "ours": "incomplete", "agree": "-", "why": ""}, fig
    gap = 100 * (t.loc["lora", "accuracy_mean"] - t.loc["loreft", "accuracy_mean"])
    share = t.loc["loreft", "trainable_params"] / t.loc["lora", "trainable_params"]
    ok = gap <= 1.5 and share <= 0.1
    ours = (f"LoReFT {100 * t.loc['loreft', 'accuracy_mean']:.1f} ± {100 * t.loc['loreft', 'accuracy_std']:.1f} vs "
            f"LoRA {100 * t.loc['lora', 'accuracy_mean']:.1f} ± {100 * t.loc['lora', 'accuracy_std']:.1f} "
            f"at {share:.3f}x its parameters" + "".join(
                f"; {m} {100 * t.loc[m, 'accuracy_mean']:.1f}" for m in ("full", "probe") if m in t.index))
    rates = s.get("rates") or {}
    why = (f"gap {gap:+.1f} points (target <= 1.5) at {share:.3f}x the parameters (target <= 0.1; heads not "
           f"counted, as in the paper)"
           + (f"; rates chosen on held-out train sentences: LoReFT {rates['loreft']:g}, LoRA {rates['lora']:g}"
              if {"loreft", "lora"} <= set(rates) else "")
           + ("" if ok else "; small budget: few epochs on a train subset (see the config)"))
    return {"finding": "LoReFT ≈ LoRA at ≤1/10 the parameters (encoder SST-2)", "ours": ours,
            "agree": ("agree" if ok else "disagree") if {"loreft", "lora"} <= set(t.index) else "-", "why": why}, fig


def _decoder_cells(folder: Path) -> dict | None:
    """The study's summary, or one assembled from its finished cells (a study stopped part-way)."""
    rows = []
    for path in sorted(folder.glob("*/*/summary.json")):
        row = json.loads(path.read_text())
        rows.append({**row, "cell": f"{path.parent.parent.name}/{path.parent.name.replace('_', ' ')}"})
    if not rows:
        return None
    runs = pd.DataFrame(rows)
    ab = runs[runs.cell.str.startswith("ablation/")]
    compare = runs[runs.cell.str.startswith("compare/")]
    table = compare.groupby("method", sort=False).agg(
        accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"), seeds=("seed", "count"),
        trainable_params=("trainable_params", "first"), steps=("steps", "first")).reset_index()
    if "zero_shot" not in set(table.method) and len(ab) and ab.accuracy_at_step_0.notna().any():
        # identity-initialized LoReFT at step 0 is the zero-shot model exactly (see decoder_sst2)
        first = ab[ab.cell == "ablation/identity init"]
        if len(first):
            table = pd.concat([table, pd.DataFrame([{"method": "zero_shot", "accuracy_mean": first.accuracy_at_step_0.iloc[0],
                                                     "accuracy_std": 0.0, "seeds": 1, "trainable_params": 0,
                                                     "steps": 0}])], ignore_index=True)
    return {"table": table.fillna({"accuracy_std": 0.0}).to_dict(orient="records"),
            "ablation": ab[["cell", "accuracy", "accuracy_at_step_0", "loss_final"]].to_dict(orient="records"),
            "partial": True}


def decoder_row(out: Path):
    s = _summary(out / "decoder_sst2") or _decoder_cells(out / "decoder_sst2")
    if s is None:
        return None, None
    t = pd.DataFrame(s["table"]).set_index("method")
    ab = pd.DataFrame(s["ablation"], columns=["cell", "accuracy", "accuracy_at_step_0", "loss_final"])
    fig = go.Figure(go.Bar(x=ab.cell.str.replace("ablation/", ""), y=100 * ab.accuracy, name="after training"))
    fig.add_bar(x=ab.cell.str.replace("ablation/", ""), y=100 * ab.accuracy_at_step_0, name="at step 0")
    if not len(ab):  # a quick run has no ablation: show the comparison instead
        fig = go.Figure(go.Bar(x=t.index, y=100 * t.accuracy_mean, error_y=dict(array=100 * t.accuracy_std)))
    if "zero_shot" in t.index:
        fig.add_hline(y=100 * t.loc["zero_shot", "accuracy_mean"], line_dash="dot", annotation_text="zero-shot")
    fig.update_layout(title="Decoder SST-2 (SmolLM2): LoReFT ablation, one change at a time (seed 0)",
                      yaxis_title="% dev accuracy", barmode="group")
    parts = [f"{m} {100 * r.accuracy_mean:.1f} ± {100 * r.accuracy_std:.1f}" for m, r in t.iterrows()]
    why = _decoder_why(ab, float(t.loc["zero_shot", "accuracy_mean"]) if "zero_shot" in t.index else None)
    ok = {"loreft", "lora"} <= set(t.index) and t.loc["loreft", "accuracy_mean"] >= t.loc["lora", "accuracy_mean"] - 0.015
    if s.get("partial"):
        parts.append("PARTIAL: the study stopped before every cell finished")
    return {"finding": "LoReFT ≈ LoRA (decoder SST-2, SmolLM2)", "ours": "; ".join(parts),
            "agree": "agree" if ok else "disagree", "why": why}, fig


def _decoder_why(ab: pd.DataFrame, zero: float | None) -> str:
    """What the ablation shows, from its numbers (seed 0, one change at a time)."""
    if zero is None or not len(ab):
        return "no ablation run (quick mode)"
    cells = ab.assign(name=ab.cell.str.replace("ablation/", "")).set_index("name")
    notes = []
    if "earlier setting" in cells.index:
        e = cells.loc["earlier setting"]
        side = "above" if e.accuracy >= zero else "below"
        notes.append(f"the earlier setting (64 steps, lr 4e-3, f1+l1, paper init) now ends at {100 * e.accuracy:.1f}%, "
                     f"{side} zero-shot {100 * zero:.1f}%")
        if pd.notna(e.accuracy_at_step_0):
            notes.append(f"at step 0 the paper init scores {100 * e.accuracy_at_step_0:.1f}% (its random edit moves the "
                         f"loss, not the label ranking)")
    for name, row in cells.iterrows():
        if name != "earlier setting":
            notes.append(f"{name}: {100 * row.accuracy:.1f}%")
    return "; ".join(notes)


def memorization_row(out: Path):
    path = out / "memorization" / "capacity.csv"
    if not path.is_file():
        return None, None
    t = pd.read_csv(path)
    if not len(t):
        return None, None
    pivot = t.pivot_table(index="variant", columns="layer", values="capacity", aggfunc="max")
    fig = go.Figure(go.Heatmap(z=pivot.values, x=[f"L{c}" for c in pivot.columns], y=list(pivot.index),
                               text=pivot.values, texttemplate="%{text}", colorscale="Viridis"))
    fig.update_layout(title="Memorization: largest N recited exactly by a rank-1 intervention (SmolLM2, CPU budget)")
    best = t.loc[t.capacity.idxmax()]
    ours = f"max {int(best.capacity)} tokens ({best.variant}, L{int(best.layer)}); " + ", ".join(
        f"{v}: {int(pivot.loc[v].max())}" for v in pivot.index)
    why = ("a 135M model and a per-run CPU time budget, not a 7B model trained to convergence; the first failed N "
           "per (layer, variant) is in capacity.csv")
    return {"finding": "rank-1 memorization capacity", "ours": ours, "agree": "disagree" if best.capacity < 2048
            else "agree", "why": why}, fig


def ravel_row(out: Path):
    s = _summary(out / "ravel")
    if s is None:
        return None, None
    t = pd.DataFrame(s["table"])
    col = "disentangle_mean" if "disentangle_mean" in t else None
    if col is None:
        return None, None
    by = t.groupby("method")[col].mean().sort_values(ascending=False)
    fig = go.Figure(go.Bar(x=by.index, y=by.values))
    fig.update_layout(title="RAVEL Disentangle (mean over attributes and seeds)", yaxis_title="Disentangle")
    ours = ", ".join(f"{m} {v:.3f}" for m, v in by.items())
    ok = {"mdas", "das"} <= set(by.index) and by["mdas"] >= by["das"] - 0.01
    return {"finding": "RAVEL: MDAS ≥ DAS", "ours": ours, "agree": "agree" if ok else "disagree",
            "why": f"missing attributes in the offline mirror: {s.get('missing_attributes') or 'none'}"}, fig


def sentiment_row(out: Path):
    from .sentiment import ablation_lost
    s = _summary(out / "sentiment")
    # the saved summary holds the SST rows; older ones also carried the share itself
    lost = None if s is None else s.get("ablation_lost", ablation_lost(s))
    if lost is None:
        return None, None
    lost, control = float(lost), ablation_lost(s, "random")
    fig = go.Figure(go.Bar(x=["paper", "ours", "ours: random direction"],
                           y=[76, 100 * lost, 100 * control if control is not None else 0]))
    fig.update_layout(title="Sentiment direction ablation: share of above-chance SST accuracy lost", yaxis_title="%")
    why = "mean-ablation of the mean-difference direction at every layer, all positions, on SST dev"
    if control is not None:
        why += f"; a random direction ablated the same way loses {100 * control:.0f}%"
    return {"finding": "sentiment ablation", "ours": f"-{100 * lost:.0f}%", "agree": verdict(lost, 0.76, 0.1),
            "why": why}, fig


ROWS = {"encoder_sst2": encoder_row, "decoder_sst2": decoder_row, "memorization": memorization_row,
        "ravel": ravel_row, "sentiment": sentiment_row}


def build_report(out: str | Path, timings: dict | None = None) -> pd.DataFrame:
    """Write ``out/report.md`` and ``out/report.html``; returns the findings table."""
    out = Path(out)
    rows, figures = [], []
    for name, make in ROWS.items():
        row, fig = make(out)
        paper, claim = PAPERS[name]
        if row is None:
            row = {"finding": name, "ours": "not run yet", "agree": "-", "why": ""}
        rows.append({"study": name, "paper": f"{claim} ({paper})", **row,
                     "seconds": (timings or {}).get(name)})
        if fig is not None:
            figures.append((name, fig))
    table = pd.DataFrame(rows)
    cols = ["finding", "paper", "ours", "agree", "why", "seconds"]
    md = ["# Reproducing the seed papers' findings at small scale", "",
          "Generated by `workbench reproduce`; every study is a saved run under this folder.", "",
          "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in table.itertuples():
        md.append("| " + " | ".join(str(getattr(r, c)).replace("|", "/") if getattr(r, c) is not None else ""
                                    for c in cols) + " |")
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    parts = ["<html><head><meta charset='utf-8'><title>Reproduction report</title></head><body>",
             "<h1>Reproducing the seed papers' findings at small scale</h1>",
             table[cols].to_html(index=False, escape=True, na_rep="")]
    for i, (name, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))  # plotly.js inline once: works offline
    parts.append("</body></html>")
    atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text("\n".join(parts)))
    table.to_csv(out / "report.csv", index=False)
    return table


__all__ = ["PAPERS", "build_report", "verdict"]
