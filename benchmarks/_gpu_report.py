"""The Markdown summary of a gpu_suite result (the JSON holds everything; this is the table to read)."""

from __future__ import annotations


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head, rows) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows), ""]


def _main_value(check: dict) -> str:
    for key in ("max_abs_diff", "abs_diff", "token_agreement"):
        if key in check:
            return f"{key} {check[key]:.3g}"
    if "first_loss" in check:
        return f"loss {check['first_loss']:.4f} -> {check['last_loss']:.4f}"
    if "first_epoch_loss" in check:
        return f"loss {check['first_epoch_loss']:.4f} -> {check['last_epoch_loss']:.4f}"
    return ""


def markdown(results: dict) -> str:
    s = results.get("sections", {})
    lines = [f"# GPU suite{' (tiny dry run)' if results.get('tiny') else ''}", ""]
    env = s.get("env", {})
    if env:
        lines += [f"{env.get('date')} · {env.get('device')} · torch {env.get('torch')} · transformers "
                  f"{env.get('transformers')} · {env.get('threads')} threads · timing dtype {env.get('timing_dtype')} · "
                  f"{env.get('steps')} timed steps after {env.get('warmup')} warm-up, medians", ""]
    for name, sec in s.items():
        if "error" in sec or "skipped" in sec:
            lines += [f"**{name}**: {sec.get('error') or sec.get('skipped')}", ""]
    checks = s.get("correctness", {}).get("checks", {})
    if checks:
        names = [n for n in next(iter(checks.values())) if n != "model"]
        lines += ["## Correctness", ""]
        lines += _table(["check", *checks], [[n, *(("PASS " if c[n]["passed"] else "FAIL ") + _main_value(c[n])
                                                  for c in checks.values())] for n in names])
    timing = [(n, sec) for n, sec in s.items() if n.startswith("loreft_") and "median_ms" in sec]
    if timing:
        lines += ["## LoReFT step (ms, median) vs plain forward+backward", ""]
        head = ["config", "plain fwd", "plain fwd+bwd", "frozen fwd+bwd", "hand-written hook", "workbench",
                "wb / plain", "wb / hand", "hand / plain", "goal", "pyreft / plain (README)", "hook / plain (README)"]
        rows = []
        for n, sec in timing:
            m, r, a = sec["median_ms"], sec["ratios"], sec["anchors_peers_readme"]
            rows.append([n, m["plain_fwd"], m["plain_fwd_bwd"], m["frozen_fwd_bwd"], m["hand_hook"], m["workbench"],
                         f"{r['workbench/plain_fwd_bwd']:.3f}", f"{r['workbench/hand_hook']:.3f}",
                         f"{r['hand_hook/plain_fwd_bwd']:.3f}",
                         f"<= {a['goal']} {'met' if sec['goal_met'] else 'NOT met'}", a["pyreft/plain"], a["hand_hook/plain"]])
        lines += _table(head, rows)
    das = s.get("das", {})
    if "median_ms" in das:
        m = das["median_ms"]
        lines += ["## DAS step", ""]
        lines += _table(["site", "k", "plain fwd ms", "plain fwd+bwd ms", "DAS step ms", "DAS / plain fwd+bwd"],
                        [[das["site"], das["k"], m["plain_fwd"], m["plain_fwd_bwd"], m["das_step"],
                          das["ratios"]["das_step/plain_fwd_bwd"]]])
    sw = s.get("sweeps", {})
    if "cells_per_second" in sw:
        lines += [f"## Sweeps ({sw.get('model')}, {sw.get('dtype')}, {sw.get('tokens')} tokens)", ""]
        lines += _table(["method", "cells", "median ms", "cells / s"],
                        [[k, sw["cells"][k], sw["median_ms"][k], v] for k, v in sw["cells_per_second"].items()])
    mem = s.get("memorization", {})
    rows = [[d, v["layer"], v["n_tokens"], v["steps_per_second"]["fast"], v["steps_per_second"]["naive"],
             v["speedup_fast_vs_naive"]] for d, v in mem.items() if isinstance(v, dict) and "steps_per_second" in v]
    if rows:
        lines += [f"## Memorization ({mem.get('model')}, rank-1 ConsReFT, Adam)", ""]
        lines += _table(["dtype", "layer", "N", "fast steps/s", "naive steps/s", "fast / naive"], rows)
    ck = {k: v for k, v in s.get("checkpoints", {}).items() if isinstance(v, dict)}
    if ck:
        lines += ["## Checkpoint sizes (bytes on disk)", ""]
        lines += _table(["hidden", "config", "bytes", "trainable params"],
                        [[d, name, c["total_bytes"], c["trainable_parameters"]] for d, v in ck.items() for name, c in v.items()])
    return "\n".join(lines)
