"""Patching sweeps on SmolLM2-135M: workbench vs nnsight vs TransformerLens vs the compute floor.

The sweeps: base "Paris is in the country of", source "Rome is in the country of"; metric
logit(" France") - logit(" Italy") at the last token. Works (one row per work and baseline):

  resid_pre / attn_out / mlp_out   layer x position: 30 layers x 6 tokens = 180 cells
  heads                            layer x head (z, every position): 30 layers x 9 heads = 270 cells

Methods, each timed inside its own process, model loading excluded:

  workbench  workbench.sweeps.patch_sweep / head_sweep (path "auto" = layer stepping): both
             cached runs (source and base), the cells, the DataFrame and its two baselines
  prefix     the same call with path="prefix" (the path before layer stepping: prefix KV
             cache, all layers per cell); resid_pre only, as a before/after row
  floor      the summed per-cell work run as plain forwards: for each cell (L, p), one unpatched
             forward of blocks L..29 over tokens p..5 (batch 1), attending over the base's cached
             keys/values of tokens < p, then the final norm and the metric's two unembedding rows
             (`workbench.layer_steps.plain_suffix_readout`). A head cell is (L, all tokens). The
             base run that provides the cache is prepared once, untimed. No hooks, no batching
             across cells: what a cell must compute at least, one cell at a time.
  nnsight    nnsight 0.8 TransformersModel: one trace saving the source's states, then one trace
             per cell writing the source state in place (layer input, o_proj / down_proj output,
             or o_proj input channels of one head)
  tl         TransformerLens TransformerBridge + get_act_patch_resid_pre (one forward per cell;
             resid_pre only), in its own venv (.peers/tl) as a persistent subprocess
             (benchmarks/_tl_sweep.py) that times itself; idle while the others run

Each round runs every method of a work once, order alternating between rounds; medians over the
timed rounds. ``ratio`` is ours / baseline. Goals (issue 12) are set for the 180-cell resid_pre
sweep only: "15x faster" = "<= 0.0667", vs the floor "<= 1.3"; the issue asks the other
components to report the same ratios, so their rows carry no goal. Same torch thread count in
every process.

    .venv/bin/python benchmarks/sweep_vs_peers.py --json benchmarks/results/sweep.json
    .venv/bin/python benchmarks/sweep_vs_peers.py --quick --threads 1 --json /tmp/sweep.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nnsight loads the local folder through a pipeline
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench import Site, load_model  # noqa: E402
from workbench.layer_steps import BaseRun, plain_suffix_readout  # noqa: E402
from workbench.metrics import logit_difference  # noqa: E402
from workbench.models import prepare_default_model  # noqa: E402
from workbench.runs import atomic_write  # noqa: E402
from workbench.sweeps import head_sweep, metric_readout, patch_sweep, single_token_id  # noqa: E402

BASE, SOURCE, TARGET, FOIL = "Paris is in the country of", "Rome is in the country of", " France", " Italy"
GOALS = {"nnsight": 1 / 15, "tl": 1 / 15, "floor": 1.3}
COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "heads")


class TLWorker:
    """benchmarks/_tl_sweep.py --serve in the TransformerLens venv; one JSON reply per request."""

    def __init__(self, python: Path, path: Path, base_ids, source_ids, target: int, foil: int, threads: int):
        command = [str(python), str(ROOT / "benchmarks" / "_tl_sweep.py"), "--serve", "--path", str(path),
                   "--base-ids", ",".join(map(str, base_ids)), "--source-ids", ",".join(map(str, source_ids)),
                   "--target", str(target), "--foil", str(foil), "--threads", str(threads)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._reply()

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@JSON "):
                return json.loads(line[len("@@JSON "):])
        raise RuntimeError(f"TransformerLens worker exited (code {self.proc.wait()}); see its stderr above")

    def sweep(self) -> tuple[float, torch.Tensor]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return reply["seconds"], torch.tensor(reply["grid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def _grid(df, column: str) -> torch.Tensor:
    return torch.tensor(df.pivot(index="layer", columns=column, values="value").to_numpy())  # (layers, cols)


def make_ours(hm, component: str, path: str = "auto"):
    def sweep() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        if component == "heads":
            df = head_sweep(hm, BASE, SOURCE, target=TARGET, foil=FOIL, path=path)
        else:
            df = patch_sweep(hm, BASE, SOURCE, target=TARGET, foil=FOIL, component=component, path=path)
        seconds = time.perf_counter() - start
        return seconds, _grid(df, "head" if component == "heads" else "position")
    return sweep


def make_floor(hm, component: str):
    """One plain forward per cell of blocks L.. over the tokens the cell can change."""
    ids = [single_token_id(hm, TARGET), single_token_id(hm, FOIL)]
    readout = metric_readout(hm, logit_difference(*ids), ids)
    base = BaseRun(hm, hm.tokenize(BASE)["input_ids"])  # prepared once, untimed
    n_tokens = base.input_ids.shape[1]
    starts = [0] * hm.layout.n_heads if component == "heads" else list(range(n_tokens))

    def sweep() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        grid = torch.tensor([[float(plain_suffix_readout(hm, base, layer, s, readout)[0]) for s in starts]
                             for layer in range(hm.n_layers)])
        return time.perf_counter() - start, grid  # grid: unpatched values (not compared)
    return sweep


def make_nnsight(path: Path, base_ids: torch.Tensor, source_ids: torch.Tensor, target: int, foil: int,
                 component: str, n_heads: int):
    from nnsight.modeling.transformers import TransformersModel

    model = TransformersModel(str(path), task="text-generation", dispatch=True, dtype=torch.float32)
    model._module.eval()
    layers = model.model.layers
    n_layers, n_tokens = len(layers), base_ids.shape[1]

    def envoy(layer: int):
        block = layers[layer]
        if component == "resid_pre":
            return block, "input"
        if component == "attn_out":
            return block.self_attn.o_proj, "output"
        if component == "mlp_out":
            return block.mlp.down_proj, "output"
        return block.self_attn.o_proj, "input"  # heads: z, the o_proj input

    @torch.no_grad()
    def source_states() -> list[torch.Tensor]:
        saved = []
        with model.trace(source_ids):
            for layer in range(n_layers):
                module, kind = envoy(layer)
                saved.append(getattr(module, kind).save())  # (1, T, W)
        return saved

    @torch.no_grad()
    def cell(states, layer: int, col: int) -> float:
        module, kind = envoy(layer)
        with model.trace(base_ids):
            hidden = getattr(module, kind)  # (1, T, W)
            if component == "heads":
                width = hidden.shape[-1] // n_heads
                cols = slice(col * width, (col + 1) * width)
                hidden[:, :, cols] = states[layer][:, :, cols]
            else:
                hidden[:, col] = states[layer][:, col]
            logits = model.output.logits  # (1, T, V)
            value = (logits[0, -1, target] - logits[0, -1, foil]).save()
        return float(value)

    columns = range(n_heads) if component == "heads" else range(n_tokens)

    def sweep() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        states = source_states()
        grid = torch.tensor([[cell(states, layer, c) for c in columns] for layer in range(n_layers)])
        return time.perf_counter() - start, grid
    return sweep


def max_diff(grid: torch.Tensor, ours: torch.Tensor) -> str:
    if grid.shape != ours.shape:
        return f"grid shape {tuple(grid.shape)} vs ours {tuple(ours.shape)}"
    diff = (grid.double() - ours.double()).abs().max().item()
    return f"max |diff| vs ours {diff:.3g} (values span {ours.min().item():.3f} .. {ours.max().item():.3f})"


def time_work(methods: dict, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Interleaved rounds (order alternating); per-method times and each method's last grid."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    grids: dict[str, torch.Tensor] = {}
    names = list(methods)
    for rnd in range(warmup + rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        line = []
        for name in order:
            seconds, grids[name] = methods[name]()
            if rnd >= warmup:
                times[name].append(seconds)
            line.append(f"{name} {seconds:.2f}s")
        print(f"    {'warmup' if rnd < warmup else f'round {rnd - warmup + 1}'}: " + ", ".join(line), flush=True)
    return times, grids


def rows_of(work: str, times: dict, missing: dict, goals: dict) -> list[dict]:
    ours = statistics.median(times["workbench"]) * 1000
    rows = []
    for baseline in [*[b for b in times if b != "workbench"], *missing]:
        base_ms = statistics.median(times[baseline]) * 1000 if baseline in times else None
        ratio = None if base_ms is None else ours / base_ms
        goal = goals.get(baseline)
        rows.append({"work": work, "method": "workbench", "median_ms": round(ours, 1), "baseline": baseline,
                     "baseline_median_ms": None if base_ms is None else round(base_ms, 1),
                     "ratio": None if ratio is None else round(ratio, 4),
                     "goal": None if goal is None else f"<= {goal:.4g}",
                     "met": None if ratio is None or goal is None else ratio <= goal,
                     "n": len(times["workbench"])})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="resid_pre only, one timed round after an untimed call of ours (~1.5 min on a quiet core)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 3 for the other components)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--components", default=",".join(COMPONENTS), help=f"comma list of {COMPONENTS}")
    parser.add_argument("--skip", default="", help="comma list of baselines to leave out: nnsight, tl, floor, prefix")
    parser.add_argument("--tl-python", default=str(ROOT / ".peers" / "tl" / "bin" / "python"))
    parser.add_argument("--json", default=None, help="write the results here (atomically)")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    components = ["resid_pre"] if args.quick else [c for c in args.components.split(",") if c]
    bad = [c for c in components if c not in COMPONENTS]
    if bad:
        parser.error(f"--components: {bad} not in {COMPONENTS}")

    torch.set_num_threads(args.threads)
    notes = [f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) in every process"]
    print(notes[0])
    path = prepare_default_model()
    hm = load_model("smollm2-135m")
    base_ids, source_ids = hm.tokenize(BASE)["input_ids"], hm.tokenize(SOURCE)["input_ids"]  # (1, T)
    target, foil = single_token_id(hm, TARGET), single_token_id(hm, FOIL)
    print(f"model {path} ({hm.n_layers} layers, {hm.layout.n_heads} heads, attention "
          f"{hm.model.config._attn_implementation}); {hm.n_layers * base_ids.shape[1]} position cells")

    worker = None
    if "tl" not in skip and "resid_pre" in components:
        if Path(args.tl_python).exists():
            try:
                worker = TLWorker(Path(args.tl_python), path, base_ids[0].tolist(), source_ids[0].tolist(),
                                  target, foil, args.threads)
                notes.append(f"TransformerLens worker: {json.dumps(worker.info)}")
            except RuntimeError as error:
                notes.append(f"TransformerLens worker failed to start: {error}")
        else:
            notes.append(f"{args.tl_python} missing (benchmarks/setup_peers.sh installs it): no TL row values")
    if "nnsight" not in skip:
        import nnsight
        notes.append(f"nnsight {nnsight.__version__}")

    rows = []
    try:
        for component in components:
            cells = hm.n_layers * (hm.layout.n_heads if component == "heads" else base_ids.shape[1])
            what = "layer x head (z) sweep" if component == "heads" else f"layer x position {component} sweep"
            work = f"{what} ({cells} cells, SmolLM2)"
            methods = {"workbench": make_ours(hm, component)}
            if "floor" not in skip:
                methods["floor"] = make_floor(hm, component)
            if component == "resid_pre" and "prefix" not in skip:
                methods["prefix"] = make_ours(hm, component, path="prefix")
            missing = {}
            if "nnsight" not in skip:
                methods["nnsight"] = make_nnsight(path, base_ids, source_ids, target, foil, component,
                                                  hm.layout.n_heads)
            if component == "resid_pre" and "tl" not in skip:
                if worker is not None:
                    methods["tl"] = worker.sweep
                else:
                    missing["tl"] = None
            rounds = args.rounds or (1 if args.quick else 5 if component == "resid_pre" else 3)
            print(f"\n{work}: {', '.join(methods)}", flush=True)
            methods["workbench"]()  # ours warms up untimed (cheap); --warmup rounds warm every method
            times, grids = time_work(methods, rounds, 0 if args.quick else args.warmup)
            for name in ("nnsight", "tl", "prefix"):
                if name in grids:
                    notes.append(f"{work}: {name} {max_diff(grids[name], grids['workbench'])}")
            rows += rows_of(work, times, missing, GOALS if component == "resid_pre" else {})
    finally:
        if worker is not None:
            worker.close()

    print(f"\nResults ({torch.get_num_threads()} torch thread(s) per process; ratio = ours / baseline):")
    for row in rows:
        base = "n/a" if row["baseline_median_ms"] is None else f"{row['baseline_median_ms']:9.1f} ms"
        print(f"  {row['work']:55s} ours {row['median_ms']:8.1f} ms  {row['baseline']:8s} {base}  "
              f"ratio {row['ratio']}  goal {row['goal']}  met {row['met']}")
    for note in notes:
        print(f"  note: {note}")
    if args.json:
        payload = {"benchmark": "sweep", "threads": torch.get_num_threads(), "quick": args.quick,
                   "rows": rows, "notes": notes}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
