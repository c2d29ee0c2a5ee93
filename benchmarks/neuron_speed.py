"""Interventional neuron scoring on SmolLM2: the previous path vs the layers-above fast path.

The workload of `workbench neuron`: 21 neurons (1 target + 20 random) at ``L10.mlp_act``, each set
high and low (42 settings) on every text, P(concept) read after each setting.

* ``old``: hooked full forwards (``fast=False``), full-vocabulary softmax: the code before issue 14.
* ``fast``: states below the site once per text batch, only blocks L.. per setting, stacked along
  the batch; logsumexp over the concept ids.
* positions ``all`` (the neuron set at every token, P averaged over positions: the previous
  definition) and ``last`` (set at the last token, P read there: the new default).

The full-forward paths are too slow for 500 texts in a benchmark run: they are timed on
``--small`` texts and extrapolated linearly to ``--texts`` (cost is linear in texts: each text runs
alone or in same-size chunks); ``fast``/``last`` is timed on all ``--texts``. Small runs are
interleaved over ``--rounds``; medians are printed with the thread count and the load average.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/neuron_speed.py --texts 500 --small 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--site", default="L10.mlp_act")
    parser.add_argument("--index", type=int, default=100)
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--concept", default="words:good,great,excellent")
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--small", type=int, default=10, help="texts for the full-forward paths (extrapolated)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sst", default="sst")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    from probes.neurons import Concept, concept_probability, random_neurons, site_activations
    from workbench import load_model
    from workbench.data.sst import load_sst

    if args.threads:
        torch.set_num_threads(args.threads)
    hm = load_model(args.model)
    texts = list(load_sst(args.sst, "dev", limit=args.texts, seed=0)["text"])
    small = texts[:args.small]
    width = hm.site_size(args.site)
    neurons = torch.cat([torch.tensor([args.index]), random_neurons(width, args.random, exclude=[args.index])])
    acts, tokens = site_activations(hm, args.site, small)
    high, low = torch.quantile(acts[:, neurons], 0.999, dim=0), torch.quantile(acts[:, neurons], 0.5, dim=0)
    settings = torch.cat([neurons, neurons]), torch.cat([high, low])
    ids = Concept.parse(args.concept).token_ids(hm.tokenizer)
    tokens_per_text = sum(len(t) for t in hm.tokenizer(texts)["input_ids"]) / len(texts)
    print(f"{args.model} {args.site}: {len(neurons)} neurons x 2 settings, {len(texts)} SST dev texts "
          f"({tokens_per_text:.1f} tokens each), torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.2f}")

    def timed(chunk, fast, positions):
        start = time.perf_counter()
        probs = concept_probability(hm, chunk, ids, args.site, *settings, fast=fast, positions=positions)
        return time.perf_counter() - start, probs

    cases = [("old", "all"), ("fast", "all"), ("old", "last"), ("fast", "last")]
    times = {case: [] for case in cases}
    results = {}
    for round_ in range(args.rounds):
        for path, positions in cases:  # interleaved: drift in machine load hits every case alike
            seconds, probs = timed(small, path == "fast", positions)
            times[(path, positions)].append(seconds)
            results[(path, positions)] = probs
            print(f"  round {round_}: {path:<4} {positions:<4} {len(small)} texts {seconds:7.2f} s", flush=True)
    for positions in ("all", "last"):
        diff = (results[("fast", positions)] - results[("old", positions)]).abs().max().item()
        print(f"  fast vs old, positions={positions}: max |dP| = {diff:.2e}")
    seconds_full, _ = timed(texts, True, "last")
    print(f"  fast last {len(texts)} texts {seconds_full:7.2f} s (measured)")

    scale = len(texts) / len(small)
    rows = {f"{p}/{q}": statistics.median(times[(p, q)]) * scale for p, q in cases}
    rows["fast/last (measured)"] = seconds_full
    print(f"\n{len(texts)} texts x {len(neurons)} neurons (full-forward and small-run rows: median of "
          f"{args.rounds} on {len(small)} texts x {scale:.0f}):")
    for name, seconds in rows.items():
        print(f"  {name:<22} {seconds:8.1f} s  ({rows['old/all'] / seconds:5.1f}x vs old/all)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"threads": torch.get_num_threads(), "texts": len(texts), "small": len(small),
                       "neurons": len(neurons), "seconds": rows, "raw": {f"{p}/{q}": v for (p, q), v in times.items()}},
                      handle, indent=2)


if __name__ == "__main__":
    main()
