"""SST-2 as generation on SmolLM2: LoReFT vs LoRA vs the zero-shot model, and why LoReFT once fell
below zero-shot.

The task: prompt ``Review: <sentence>\\nSentiment:``, answer `` positive`` / `` negative``; the loss
is the full-vocabulary cross-entropy on the label word (logits computed at that position only);
accuracy is the sign of logit(" positive") - logit(" negative") at the prompt's last token, on a
fixed sample of the dev split. Both methods see the same examples in the same order per seed, with
AdamW and linear warm-up (10%) then decay.

The earlier result (LoReFT 79.75% < zero-shot 83.75% < LoRA 85.25%, 64 steps) came from a
``benchmarks/`` script; ``ablation`` varies one thing at a time from that setting: the budget, the
learning rate, the positions and the initialization. LoRA starts exactly at the zero-shot model
(its B is zero); LoReFT's paper initialization (random W, b) does not, so the ``init="identity"``
variant (W = R, b = 0, an exact no-op at step 0) is tested too, and every run records its accuracy
at step 0 beside its final one. The report states what the numbers show.

>>> DecoderConfig(model="tiny", steps=4).label_words
(' negative', ' positive')
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch.nn.functional import cross_entropy
from tqdm.auto import tqdm

from workbench.runs import is_complete, save_run

TEMPLATE = "Review: {}\nSentiment:"


@dataclass(frozen=True)
class DecoderConfig:
    """One decoder SST-2 run (or the settings of a study)."""

    model: str = "smollm2-135m"
    method: str = "loreft"                   # loreft | lora | zero_shot
    steps: int = 64                          # optimizer steps (the earlier result: 64)
    batch_size: int = 8
    lr: float = 4e-3                         # LoReFT's; LoRA uses lora_lr
    lora_lr: float = 2e-3
    rank: int = 4
    layers: tuple[int, ...] = (8, 16, 24)
    positions: str = "f1+l1"
    init: str = "paper"                      # paper (random W, b) | identity (W = R, b = 0)
    seed: int = 0
    train: int = 512                         # distinct training sentences (cycled for more steps)
    eval: int = 400                          # dev sentences scored
    label_words: tuple[str, str] = (" negative", " positive")

    def __post_init__(self) -> None:
        if self.method not in ("loreft", "lora", "zero_shot"):
            raise ValueError(f"method {self.method!r}: expected 'loreft', 'lora' or 'zero_shot'")
        if self.init not in ("paper", "identity"):
            raise ValueError(f"init {self.init!r}: expected 'paper' or 'identity'")


def _rows(tok, frame: pd.DataFrame, label_ids) -> list[dict]:
    rows = []
    for text, sentiment in zip(frame.text, frame.sentiment):
        prompt = tok(TEMPLATE.format(text), add_special_tokens=False)["input_ids"][:120]
        label = int(sentiment > 0)
        rows.append({"input_ids": prompt + [label_ids[label]], "prompt_length": len(prompt), "label": label})
    return rows


def _collate(rows, pad_id):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)  # (B, T) right-padded
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, :len(r["input_ids"])] = 1
    return ids, mask, torch.tensor([r["prompt_length"] for r in rows])  # plen (B,)


def _keep(ids, plen):
    keep = torch.zeros_like(ids, dtype=torch.bool)  # (B, T): logits at the prompt's last token only
    keep[torch.arange(ids.shape[0]), plen - 1] = True
    return keep


def run_decoder(config: DecoderConfig, hm=None) -> dict:
    """Train one method (``zero_shot``: none) and score it; returns a result row."""
    from workbench.data.sst import sst2
    from workbench.models import load_model
    started = time.time()
    torch.manual_seed(config.seed)
    hm = hm if hm is not None else load_model(config.model)
    tok = hm.tokenizer
    label_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in config.label_words]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    train_rows = _rows(tok, sst2("train").sample(n=config.train, random_state=0), label_ids)
    eval_rows = _rows(tok, sst2("dev").sample(n=min(config.eval, 872), random_state=0), label_ids)
    for p in hm.model.parameters():
        p.requires_grad_(False)
    model, params, undo = hm.model, [], None
    if config.method == "loreft":
        from reft import ReftConfig, get_reft_model
        from reft.interventions import LoReFT
        reft = get_reft_model(hm, ReftConfig(layers=config.layers, rank=config.rank, positions=config.positions))
        if config.init == "identity":
            for module in reft.interventions.modules():
                if isinstance(module, LoReFT):
                    module.set_identity()
        params = [p for p in reft.interventions.parameters() if p.requires_grad]

        def forward(ids, mask, plen):
            with reft.intervening(plen):
                return hm.forward({"input_ids": ids, "attention_mask": mask}, use_cache=False,
                                  logits_to_keep=_keep(ids, plen)).logits
    else:
        if config.method == "lora":
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(hm.model, LoraConfig(r=config.rank, lora_alpha=2 * config.rank, lora_dropout=0.0,
                                                        target_modules=["q_proj", "v_proj"]))
            params = [p for p in model.parameters() if p.requires_grad]
            undo = model

        def forward(ids, mask, plen):
            return model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=_keep(ids, plen)).logits

    try:
        accuracy_start = _accuracy(forward, eval_rows, pad_id, label_ids) if params else None
        losses = _train(forward, params, train_rows, config, pad_id, label_ids) if params else []
        accuracy = _accuracy(forward, eval_rows, pad_id, label_ids)
    finally:
        if undo is not None:
            undo.unload()  # the shared base model without LoRA layers again
    base = sum(p.numel() for p in hm.model.parameters())
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "accuracy": accuracy, "accuracy_at_step_0": accuracy_start,
            "trainable_params": sum(p.numel() for p in params), "trainable_share": sum(p.numel() for p in params) / base,
            "loss_first": losses[0] if losses else None, "loss_final": float(pd.Series(losses[-8:]).mean()) if losses else None,
            "eval_examples": len(eval_rows), "seconds": round(time.time() - started, 1)}


def _train(forward, params, rows, config: DecoderConfig, pad_id, label_ids) -> list[float]:
    from reft.train import lr_at
    lr = config.lr if config.method == "loreft" else config.lora_lr
    # no weight decay: it would shrink R's reflectors and LoRA's factors toward a fixed point
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
    targets = torch.tensor(label_ids)
    losses = []
    for step in tqdm(range(config.steps), desc=f"{config.method} {config.init}", leave=False):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.steps, max(1, config.steps // 10), lr)
        batch = [rows[order[(step * config.batch_size + i) % len(rows)]] for i in range(config.batch_size)]
        ids, mask, plen = _collate(batch, pad_id)
        logits = forward(ids, mask, plen)  # (B, V): the kept position only
        labels = torch.tensor([r["label"] for r in batch])
        loss = cross_entropy(logits.reshape(len(batch), -1).float(), targets[labels])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _accuracy(forward, rows, pad_id, label_ids, batch_size=25) -> float:
    right = 0
    for start in range(0, len(rows), batch_size):
        chunk = [{**r, "input_ids": r["input_ids"][:-1]} for r in rows[start:start + batch_size]]
        ids, mask, plen = _collate(chunk, pad_id)
        logits = forward(ids, mask, plen).reshape(len(chunk), -1)[:, label_ids]  # (B, 2)
        right += int((logits.argmax(-1) == torch.tensor([r["label"] for r in chunk])).sum())
    return right / len(rows)


ABLATION = {  # one change at a time from the earlier setting (LoReFT, 64 steps, lr 4e-3, f1+l1, paper init)
    "earlier setting": {},
    "identity init": {"init": "identity"},
    "4x budget (256 steps)": {"steps": 256},
    "lr 1e-3": {"lr": 1e-3},
    "positions l1": {"positions": "l1"},
}


def run_decoder_study(base: DecoderConfig, out: str | Path, seeds=(0, 1, 2), steps: int = 256,
                      ablation: bool = True, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation (seed 0) and the comparison (zero-shot, LoRA, LoReFT with identity init at
    ``steps``, over ``seeds``); every run is saved under ``out`` and reused when complete."""
    from workbench.models import load_model
    out, hm = Path(out), None
    cells = [(f"ablation/{name}", replace(base, **change)) for name, change in ABLATION.items()] if ablation else []
    cells += [("compare/zero_shot", replace(base, method="zero_shot"))]
    for seed in seeds:
        cells += [(f"compare/lora-s{seed}", replace(base, method="lora", steps=steps, seed=seed)),
                  (f"compare/loreft-s{seed}", replace(base, method="loreft", init="identity", steps=steps, seed=seed))]
    rows = []
    for name, config in tqdm(cells, desc="decoder SST-2", disable=not progress):
        folder = out / name.replace(" ", "_").replace("(", "").replace(")", "")
        stamp = {"study": "decoder_sst2", "cell": name, **asdict(config)}
        if not is_complete(folder, stamp):
            hm = hm if hm is not None else load_model(base.model)
            row = run_decoder(config, hm=hm)
            save_run(folder, pd.DataFrame([row]), stamp, summary=row)
        rows.append({"cell": name, **pd.read_parquet(folder / "results.parquet").iloc[0].to_dict()})
    runs = pd.DataFrame(rows)
    ablation_table = runs[runs.cell.str.startswith("ablation/")][["cell", "accuracy", "accuracy_at_step_0", "loss_final"]]
    compare = runs[runs.cell.str.startswith("compare/")]
    table = compare.groupby("method", sort=False).agg(
        accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"), seeds=("seed", "count"),
        trainable_params=("trainable_params", "first"), steps=("steps", "first")).reset_index().fillna({"accuracy_std": 0.0})
    save_run(out, table, {"study": "decoder_sst2", **asdict(base), "seeds": list(seeds), "compare_steps": steps},
             summary={"table": table.to_dict(orient="records"), "ablation": ablation_table.to_dict(orient="records")})
    ablation_table.to_csv(out / "ablation.csv", index=False)
    return table, ablation_table


__all__ = ["ABLATION", "DecoderConfig", "run_decoder", "run_decoder_study"]
