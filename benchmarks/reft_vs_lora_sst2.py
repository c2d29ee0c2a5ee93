"""LoReFT vs LoRA (peft) on SST-2 with SmolLM2-135M-Instruct, at a matched training budget.

SST-2 from the registry dataset ``sst`` (``workbench data fetch sst``; 5-class SST: label 3 dropped, 1-2 negative, 4-5 positive), posed
generatively: prompt ``Review: <sentence>\\nSentiment:``, target `` positive`` / `` negative``.
Both methods train on the same examples in the same order for the same number of AdamW steps
(linear schedule, 10% warm-up), with the loss on the label token only (logits computed there
only); each uses its usual learning rate. Held-out accuracy: sign of logit(" positive") −
logit(" negative") at the prompt's last token, on a fixed random subset of the SST-2 dev split.
The zero-shot base model is scored the same way.

    .venv/bin/python benchmarks/reft_vs_lora_sst2.py --train 192 --eval 200 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy

ROOT = Path(__file__).resolve().parents[1]
SHARED_SST = ROOT.parent / "shared" / "data" / "sst"  # this environment's offline mirror (benchmarks only)
TEMPLATE = "Review: {}\nSentiment:"
WORDS = (" negative", " positive")


def sst_folder() -> Path:
    """The registry's ``sst`` (imported from the offline mirror with --from when the cache lacks it)."""
    from workbench.data.fetch import import_from
    from workbench.data.registry import DatasetMissing, dataset_path
    try:
        return dataset_path("sst")
    except DatasetMissing as error:
        if not SHARED_SST.is_dir():
            sys.exit(f"{error}; nothing to do")
        return import_from("sst", SHARED_SST)


def load_sst2(split: str) -> list[tuple[str, int]]:
    path = sst_folder() / f"sst_{split}.txt"
    pairs = []
    for line in path.read_text().splitlines():
        label, text = line.split("\t", 1) if "\t" in line else line.split(" ", 1)
        n = int(label.replace("__label__", ""))
        if n != 3:
            pairs.append((text.strip(), int(n >= 4)))
    return pairs


def encode(tok, pairs, label_ids):
    rows = []
    for text, label in pairs:
        prompt = tok(TEMPLATE.format(text), add_special_tokens=False)["input_ids"][:120]
        rows.append({"input_ids": prompt + [label_ids[label]], "prompt_length": len(prompt), "label": label})
    return rows


def collate(rows, pad_id):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)  # (B, T) right-padded
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, :len(r["input_ids"])] = 1
    plen = torch.tensor([r["prompt_length"] for r in rows])  # (B,)
    return ids, mask, plen


def run_method(name, forward, params, train_rows, eval_rows, args, pad_id, label_ids):
    history = []
    if params:
        # no weight decay: it would zero LoReFT's R (torch's Householder map reads its diagonal with .int())
        opt = torch.optim.AdamW(params, lr=args.lr_reft if name == "loreft" else args.lr_lora, weight_decay=0.0)
        steps = args.epochs * (len(train_rows) // args.batch)
        warm = max(1, steps // 10)
        order = list(range(len(train_rows)))
        started, step = time.time(), 0
        for epoch in range(args.epochs):
            random.Random(epoch).shuffle(order)
            for b in range(len(train_rows) // args.batch):
                lr = opt.defaults["lr"] * (min(1.0, (step + 1) / warm) if step < warm else (steps - step) / (steps - warm))
                for g in opt.param_groups:
                    g["lr"] = lr
                rows = [train_rows[i] for i in order[b * args.batch:(b + 1) * args.batch]]
                ids, mask, plen = collate(rows, pad_id)
                labels = torch.tensor([r["label"] for r in rows])
                # full-vocabulary cross-entropy on the label word (as training a generator does)
                full = forward(ids, mask, plen, _keep(ids, plen))  # (B, V)
                loss = cross_entropy(full.float(), torch.tensor(label_ids)[labels])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                history.append(round(float(loss.detach()), 4))
                step += 1
                print(f"  {name} step {step}/{steps} loss {loss.item():.4f} ({time.time() - started:.0f} s)", flush=True)
        train_s = time.time() - started
    else:
        train_s = 0.0
    correct = 0
    with torch.no_grad():
        for i in range(0, len(eval_rows), args.eval_batch):
            rows = eval_rows[i:i + args.eval_batch]
            ids, mask, plen = collate([{**r, "input_ids": r["input_ids"][:-1]} for r in rows], pad_id)
            logits = forward(ids, mask, plen, _keep(ids, plen))[:, label_ids]  # (B, 2)
            correct += int((logits.argmax(-1) == torch.tensor([r["label"] for r in rows])).sum())
    return {"accuracy": round(correct / len(eval_rows), 4), "train_seconds": round(train_s, 1),
            "first_losses": history[:5], "last_losses": history[-5:]}


def _keep(ids, plen):
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[torch.arange(ids.shape[0]), plen - 1] = True
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-batch", type=int, default=25)
    parser.add_argument("--lr-reft", type=float, default=4e-3)
    parser.add_argument("--lr-lora", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--layers", default="8,16,24")
    parser.add_argument("--positions", default="f1+l1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="zero_shot,loreft,lora")
    parser.add_argument("--out", default=f"runs/reft-vs-lora-sst2-{datetime.now():%Y%m%d-%H%M%S}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from reft import ReftConfig, get_reft_model
    from workbench import load_model

    rng = random.Random(0)
    train_pairs = rng.sample(load_sst2("train"), args.train)
    eval_pairs = rng.sample(load_sst2("dev"), args.eval)
    results = {"config": vars(args), "n_train": len(train_pairs), "n_eval": len(eval_pairs)}
    for method in args.methods.split(","):
        torch.manual_seed(0)
        hm = load_model()
        tok = hm.tokenizer
        label_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        train_rows, eval_rows = encode(tok, train_pairs, label_ids), encode(tok, eval_pairs, label_ids)
        base = sum(p.numel() for p in hm.model.parameters())
        for p in hm.model.parameters():
            p.requires_grad_(False)
        if method == "loreft":
            reft = get_reft_model(hm, ReftConfig(layers=tuple(int(x) for x in args.layers.split(",")),
                                                 rank=args.rank, positions=args.positions))
            reft.train()

            def forward(ids, mask, plen, keep, reft=reft):
                with reft.intervening(plen):
                    return hm.forward({"input_ids": ids, "attention_mask": mask}, use_cache=False,
                                      logits_to_keep=keep).logits
            params = list(reft.parameters())
        elif method == "lora":
            from peft import LoraConfig, get_peft_model
            peft_model = get_peft_model(hm.model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                                             target_modules=["q_proj", "v_proj"]))

            def forward(ids, mask, plen, keep, m=peft_model):
                return m(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
            params = [p for p in peft_model.parameters() if p.requires_grad]
        else:
            def forward(ids, mask, plen, keep):
                return hm.forward({"input_ids": ids, "attention_mask": mask}, use_cache=False,
                                  logits_to_keep=keep).logits
            params = []
        result = run_method(method, forward, params, train_rows, eval_rows, args, pad_id, label_ids)
        result["trainable_params"] = sum(p.numel() for p in params)
        result["share_of_base_%"] = round(100 * result["trainable_params"] / base, 4)
        results[method] = result
        print(method, json.dumps(result), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
