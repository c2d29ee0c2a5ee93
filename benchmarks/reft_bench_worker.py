"""Worker for benchmarks/reft_step_time.py: builds one model and answers step requests on stdin.

Runs under two interpreters: the project's (.venv: methods ``workbench`` and ``hook``) and the
pyreft peer's (.peers/pyreft: methods ``pyreft`` and ``hook``; transformers 4.45, no workbench).
Protocol, one line each: the driver sends ``step <method>`` and reads back the seconds of one
training step (forward + backward + AdamW step), or ``mem <method> <n>`` and reads back the peak
resident memory (KiB) above the pre-step level over n steps (VmHWM reset through
/proc/self/clear_refs), or ``loss <method>`` for a correctness check. ``quit`` ends it.

Every method trains rank-4 LoReFT at the same layers on the first and last prompt tokens with
untied weights, on the same (B, T) batch; ``--labels response`` puts labels on the second half of
each sequence (the prompt is the first half), ``all`` on every token.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True, head_dim=64)
RANDOM = dict(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)


def build_model(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(**(SMOLLM2 if name == "smollm2" else RANDOM))
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    if name == "smollm2":  # the real weights (shapes match the config above)
        from safetensors.torch import load_file
        path = Path.home() / ".cache" / "workbench" / "smollm2-135m" / "model.safetensors"
        model.load_state_dict(load_file(str(path)), strict=False)
        model.tie_weights()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_batch(vocab: int, batch: int, seq: int, labels: str):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)  # (B, T)
    mask = torch.ones_like(ids)  # (B, T)
    lab = ids.clone()
    prompt = seq // 2
    if labels == "response":
        lab[:, :prompt] = -100
    return ids, mask, lab, torch.full((batch,), prompt)  # prompt_lengths (B,)


class HandLoReFT(nn.Module):
    """h + Rᵀ(W h + b − R h), R with orthonormal rows (Householder), written by hand."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.R = orthogonal(nn.Linear(d, r, bias=False), orthogonal_map="householder")
        self.W = nn.Linear(d, r)

    def forward(self, h):
        R = self.R.weight  # (r, d)
        return h + (self.W(h) - h @ R.T) @ R  # (B, k, d)


def hand_written(model, layers, rank, prompt_len):
    """register_forward_hook LoReFT: first and last prompt token, untied, edited in place."""
    d = model.config.hidden_size
    edits = nn.ModuleList([HandLoReFT(d, rank) for _ in range(2 * len(layers))])
    first, last = torch.tensor([0]), torch.tensor([prompt_len - 1])

    def hook_for(i):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple) else output  # (B, T, d)
            h[:, first] = edits[2 * i](h[:, first])
            h[:, last] = edits[2 * i + 1](h[:, last])
        return hook

    handles = [model.model.layers[layer].register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    return edits, handles


def setup(method, model, layers, rank, batch):
    """Returns (trainable module, loss_fn) for a method."""
    ids, mask, lab, plen = batch
    if method == "hook":
        edits, _ = hand_written(model, layers, rank, int(plen[0]))
        return edits, lambda: model(input_ids=ids, attention_mask=mask, labels=lab).loss
    if method == "workbench":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from reft import ReftConfig, get_reft_model
        from workbench import HookedModel
        reft = get_reft_model(HookedModel(model, None), ReftConfig(layers=tuple(layers), rank=rank,
                                                                  positions="f1+l1", tied=False))
        return reft, lambda: reft(input_ids=ids, attention_mask=mask, labels=lab, prompt_lengths=plen).loss
    if method == "pyreft":
        import pyreft
        d = model.config.hidden_size
        reps = [{"layer": layer, "component": "block_output", "low_rank_dimension": rank,
                 "intervention": pyreft.LoreftIntervention(embed_dim=d, low_rank_dimension=rank, dtype=torch.float32)}
                for layer in list(layers) + list(layers)]  # untied: first-position copies, then last
        rm = pyreft.get_reft_model(model, pyreft.ReftConfig(representations=reps), set_device=False)
        p = int(plen[0])
        locs = torch.tensor([[[0]] * len(layers) + [[p - 1]] * len(layers)] * ids.shape[0])  # (B, n_iv, 1)

        def loss():  # as pyreft.ReftTrainer.compute_loss does it
            _, cf = rm({"input_ids": ids, "attention_mask": mask},
                       unit_locations={"sources->base": (None, locs.permute(1, 0, 2).tolist())}, labels=lab)
            return cf.loss
        trainable = nn.ModuleList([v[0] if isinstance(v, (list, tuple)) else v for v in rm.interventions.values()])
        return trainable, loss
    raise ValueError(f"unknown method {method!r}")


def vm(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random", choices=["random", "smollm2"])
    parser.add_argument("--methods", default="workbench,hook")
    parser.add_argument("--labels", default="response", choices=["response", "all"])
    parser.add_argument("--layers", default="1,3")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    batch = make_batch(RANDOM["vocab_size"] if args.model == "random" else SMOLLM2["vocab_size"],
                       args.batch, args.seq, args.labels)
    runners = {}
    for method in args.methods.split(","):
        model = build_model(args.model)  # one model per method: hooks never meet
        trainable, loss_fn = setup(method, model, layers, args.rank, batch)
        opt = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)

        def step(loss_fn=loss_fn, opt=opt):
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        runners[method] = (step, trainable, loss_fn)
    print(json.dumps({"ready": sorted(runners), "torch": torch.__version__,
                      "transformers": __import__("transformers").__version__, "threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        step, trainable, loss_fn = runners[cmd[1]]
        if cmd[0] == "step":
            gc.collect()
            start = time.perf_counter()
            step()
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif cmd[0] == "mem":
            gc.collect()
            before = vm("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
            for _ in range(int(cmd[2])):
                step()
            print(json.dumps({"peak_kib": vm("VmHWM") - before}), flush=True)
        elif cmd[0] == "loss":
            with torch.no_grad():
                print(json.dumps({"loss": float(loss_fn())}), flush=True)


if __name__ == "__main__":
    main()
