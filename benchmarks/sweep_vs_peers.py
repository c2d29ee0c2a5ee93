"""Layer x position resid_pre patching sweep on SmolLM2-135M: workbench vs nnsight vs TransformerLens.

The sweep: base "Paris is in the country of", source "Rome is in the country of"; for every
(layer, position) the source's resid_pre is patched into the base and the metric is
logit(" France") - logit(" Italy") at the last token (30 layers x 6 tokens = 180 cells).

  ours      workbench.sweeps.patch_sweep: one cached source run, cells stacked along the batch
            (64 per forward), plus the two baseline forwards it reports (the peers skip those)
  nnsight   nnsight 0.8.1 TransformersModel: one trace saving the source's 30 layer inputs, then
            one trace per cell that writes the source state into the layer input in place
  tl        TransformerLens 4.3 TransformerBridge.boot_transformers + run_with_cache(source) +
            transformer_lens.patching.get_act_patch_resid_pre (one forward per cell). It lives in
            its own venv (.peers/tl), so benchmarks/_tl_sweep.py runs as a persistent subprocess
            that times each sweep inside itself and answers one JSON line per request.

Each round runs the three in turn (order alternating), each timed inside its own process and
excluding model loading; the main process waits idle while the subprocess works and vice versa.
Same torch thread count everywhere. Prints the thread count, per-method medians, ratios to ours,
and the max |difference| of each peer's grid from ours (allclose at atol=rtol=1e-4).

Run from the repository root (the TL part needs .peers/tl, see /work/shared/peers/README.md):

    .venv/bin/python benchmarks/sweep_vs_peers.py                 # 1 thread, 5 timed rounds
    .venv/bin/python benchmarks/sweep_vs_peers.py --threads 2 --rounds 7 --skip tl
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

from workbench import load_model  # noqa: E402
from workbench.models import prepare_default_model  # noqa: E402
from workbench.sweeps import patch_sweep, single_token_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE, SOURCE, TARGET, FOIL = "Paris is in the country of", "Rome is in the country of", " France", " Italy"


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


def make_ours(hm):
    def sweep() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        df = patch_sweep(hm, BASE, SOURCE, target=TARGET, foil=FOIL, component="resid_pre")
        seconds = time.perf_counter() - start
        grid = torch.tensor(df.pivot(index="layer", columns="position", values="value").to_numpy())
        return seconds, grid  # (layers, positions)
    return sweep


def make_nnsight(path: Path, base_ids: torch.Tensor, source_ids: torch.Tensor, target: int, foil: int):
    from nnsight.modeling.transformers import TransformersModel

    model = TransformersModel(str(path), task="text-generation", dispatch=True, dtype=torch.float32)
    model._module.eval()
    layers = model.model.layers
    n_layers, n_tokens = len(layers), base_ids.shape[1]

    @torch.no_grad()
    def source_states() -> list[torch.Tensor]:
        saved = []
        with model.trace(source_ids):
            for layer in range(n_layers):
                saved.append(layers[layer].input.save())  # (1, T, d) resid_pre
        return saved

    @torch.no_grad()
    def cell(states, layer: int, pos: int) -> float:
        with model.trace(base_ids):
            hidden = layers[layer].input  # (1, T, d)
            hidden[:, pos] = states[layer][:, pos]
            logits = model.output.logits  # (1, T, V)
            value = (logits[0, -1, target] - logits[0, -1, foil]).save()
        return float(value)

    def sweep() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        states = source_states()
        grid = torch.tensor([[cell(states, layer, pos) for pos in range(n_tokens)] for layer in range(n_layers)])
        return time.perf_counter() - start, grid
    return sweep


def compare(name: str, grid: torch.Tensor, ours: torch.Tensor) -> None:
    grid, ours = grid.double(), ours.double()
    if grid.shape != ours.shape:
        print(f"  {name}: MISMATCH grid shape {tuple(grid.shape)} vs ours {tuple(ours.shape)}")
        return
    diff = (grid - ours).abs().max().item()
    close = torch.allclose(grid, ours, atol=1e-4, rtol=1e-4)
    print(f"  {name} vs ours: allclose(atol=rtol=1e-4) {close}, max |diff| {diff:.3g} "
          f"(values span {ours.min().item():.3f} .. {ours.max().item():.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs every method once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--skip", default="", help="comma list of methods to leave out: nnsight, tl")
    parser.add_argument("--tl-python", default=str(ROOT / ".peers" / "tl" / "bin" / "python"))
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch threads: {torch.get_num_threads()} (all processes)")
    path = prepare_default_model()
    hm = load_model("smollm2-135m")
    base_ids = hm.tokenize(BASE)["input_ids"]  # (1, T)
    source_ids = hm.tokenize(SOURCE)["input_ids"]  # (1, T)
    target, foil = single_token_id(hm, TARGET), single_token_id(hm, FOIL)
    print(f"model {path} ({hm.n_layers} layers); base tokens "
          f"{hm.tokenizer.convert_ids_to_tokens(base_ids[0].tolist())}; {hm.n_layers * base_ids.shape[1]} cells")

    methods = {"ours": make_ours(hm)}
    if "nnsight" not in skip:
        import nnsight
        print(f"nnsight {nnsight.__version__}")
        methods["nnsight"] = make_nnsight(path, base_ids, source_ids, target, foil)
    worker = None
    if "tl" not in skip:
        if not Path(args.tl_python).exists():
            raise SystemExit(f"{args.tl_python} not found: install TransformerLens in .peers/tl "
                             f"(see /work/shared/peers/README.md) or pass --skip tl")
        worker = TLWorker(Path(args.tl_python), path, base_ids[0].tolist(), source_ids[0].tolist(),
                          target, foil, args.threads)
        print(f"TransformerLens worker: {json.dumps(worker.info)}")
        methods["tl"] = worker.sweep

    try:
        times: dict[str, list[float]] = {name: [] for name in methods}
        grids: dict[str, torch.Tensor] = {}
        names = list(methods)
        for rnd in range(args.warmup + args.rounds):
            order = names if rnd % 2 == 0 else names[::-1]
            line = []
            for name in order:
                seconds, grids[name] = methods[name]()
                if rnd >= args.warmup:
                    times[name].append(seconds)
                line.append(f"{name} {seconds:.2f}s")
            tag = "warmup" if rnd < args.warmup else f"round {rnd - args.warmup + 1}"
            print(f"  {tag}: " + ", ".join(line), flush=True)
    finally:
        if worker is not None:
            worker.close()

    print(f"\nResults ({args.rounds} timed rounds, {torch.get_num_threads()} torch thread(s) per process):")
    ours = statistics.median(times["ours"])
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = statistics.median(t / o for t, o in zip(ts, times["ours"]))
        print(f"  {name:8s} median {med:8.3f} s  (min {min(ts):7.3f})  ratio to ours {med / ours:6.2f}  "
              f"(median of per-round ratios {paired:.2f})")
    print("\nCorrectness (last round's grids, layers x positions):")
    for name in methods:
        if name != "ours":
            compare(name, grids[name], grids["ours"])
    if worker is not None:
        print(f"  tl baselines: base {worker.info['base_value']:.5f}, source {worker.info['source_value']:.5f}")


if __name__ == "__main__":
    sys.exit(main())
