"""Concept detection and steering, as AxBench does it, at one site.

Detectors (each a direction; a text's score is the max over its tokens of ``h_t · v``):

| method | direction |
| --- | --- |
| ``diffmean`` | mean(concept) − mean(non-concept) of the train texts' mean-pooled states |
| ``probe`` | L2 logistic regression weights (scikit-learn, `probes.directions`) |
| ``pca`` | first principal component (labels only fix its sign) |
| ``reft_r1`` | rank-1 ReFT trained to detect and steer (`analyses.reft_r1`) |

Each is scored by AUROC (scikit-learn) on held-out test texts whose concept words no detector
saw. Each direction is then a steering vector ``h + α·s·v`` at every position (``s`` = mean
norm of the site's states, so α is in units of a typical state); α is chosen on the validation
split as the factor with the highest **concept probability** (next-token probability mass on the
concept words after neutral prompts) among those that raise the LM loss of held-out non-concept
texts by at most ``max_loss_increase`` nats; the test split then reports both at that α.

>>> result = concept_detection(hm, texts, "L6.resid_post")     # doctest: +SKIP
>>> result.table[["method", "auroc", "factor", "concept_prob"]]   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from probes.directions import logistic_probe, mean_difference, pca_direction
from workbench import AddVector, HookedModel, PlanItem, Site

from .concept_data import steering_prompts

METHODS = ("diffmean", "probe", "pca", "reft_r1")
FACTORS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # SmolLM2 peaks near 0.25: finer below 1


@torch.no_grad()
def text_states(hm: HookedModel, texts: Sequence[str], site: Site | str, batch_size: int = 32
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states (n, T, d) at ``site`` (float32, CPU, zero at padding) and the mask (n, T).

    The mask leaves out each text's first token (unless it is the only one): in many models
    (SmolLM2 among them) it is an attention sink whose norm dwarfs the others', so it would win
    every max and dominate every mean, and it is the same template word in both classes.
    """
    site = Site.parse(site)
    chunks, masks = [], []
    for start in range(0, len(texts), batch_size):
        batch = hm.tokenize(list(texts[start:start + batch_size]))
        chunks.append(hm.cache(batch, [site])[site].float().cpu())  # (b, t, d)
        mask = batch["attention_mask"].bool().cpu()  # (b, t), right-padded: token 0 is the first
        mask[:, 0] &= mask.sum(1) == 1
        masks.append(mask)
    T = max(c.shape[1] for c in chunks)
    states = torch.cat([torch.nn.functional.pad(c, (0, 0, 0, T - c.shape[1])) for c in chunks])  # (n, T, d)
    mask = torch.cat([torch.nn.functional.pad(m, (0, T - m.shape[1])) for m in masks])  # (n, T)
    return states * mask[..., None], mask


def mean_pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each text's real tokens: (n, T, d) -> (n, d)."""
    return states.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


def max_scores(states: torch.Tensor, mask: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Each text's detection score: the max over its real tokens of ``h_t · v``; (n,)."""
    proj = states.float() @ direction.float()  # (n, T)
    return proj.masked_fill(~mask, float("-inf")).max(-1).values


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (n,) for binary ``labels`` (n,) (scikit-learn).

    >>> auroc(torch.tensor([0.1, 0.9, 0.2, 0.8]), torch.tensor([0, 1, 0, 1]))
    1.0
    """
    labels = np.asarray(torch.as_tensor(labels).cpu())
    if len(np.unique(labels)) != 2:
        raise ValueError(f"AUROC needs both classes among the labels, got {sorted(set(labels.tolist()))}; "
                         f"give held-out texts of the concept and of other concepts")
    return float(roc_auc_score(labels, np.asarray(torch.as_tensor(scores).float().cpu())))


def fit_direction(method: str, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A unit direction (d,) from train representations (n, d) and labels in {0, 1}."""
    y = torch.where(torch.as_tensor(labels) > 0, 1, -1)
    fitters = {"diffmean": mean_difference, "probe": logistic_probe, "pca": pca_direction}
    if method not in fitters:
        raise ValueError(f"method {method!r}: the direction fitters are {sorted(fitters)} (and 'reft_r1', "
                         f"trained with the model); choose from {list(METHODS)}")
    return fitters[method](pooled, y)


def concept_ids(hm: HookedModel, words: Sequence[str]) -> list[int]:
    """Token ids whose probability counts as the concept: each word's single token (' word'), or
    its first token where the word is several."""
    ids = {hm.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words}
    return sorted(ids)


@torch.no_grad()
def steering_metrics(hm: HookedModel, site: Site, vector: torch.Tensor, factor: float, prompts: Sequence[str],
                     fluency_texts: Sequence[str], ids: Sequence[int]) -> tuple[float, float]:
    """(concept probability after ``prompts``, LM loss of ``fluency_texts``) steered by ``factor``."""
    from .reft_r1 import _lm_loss

    vector = vector.to(device=hm.device_of(site), dtype=hm.dtype)
    plan = [PlanItem(site, "all", AddVector(vector, factor))]
    batch = hm.tokenize(list(prompts))
    with hm.intervene(plan):
        logits = hm.forward(batch, use_cache=False).logits  # (B, T, V)
    from workbench.metrics import last_token_logits
    probs = last_token_logits(logits, batch).float().softmax(-1)  # (B, V)
    concept_prob = float(probs[:, list(ids)].sum(-1).mean())
    return concept_prob, float(_lm_loss(hm, fluency_texts, plan))


@dataclass
class ConceptResult:
    """Per-method results (``table``), the validation factor sweep (``factors``), the directions."""

    table: pd.DataFrame
    factors: pd.DataFrame
    directions: dict[str, torch.Tensor]


def concept_detection(hm: HookedModel, texts: pd.DataFrame, site: Site | str, methods: Sequence[str] = METHODS,
                      factors: Sequence[float] = FACTORS, max_loss_increase: float = 1.0,
                      reft_steps: int = 30, batch_size: int = 32, seed: int = 0,
                      prompts: Sequence[str] | None = None) -> ConceptResult:
    """Fit each detector on ``texts`` (columns text, label, word, split: see
    `analyses.concept_data.concept_texts`), score it on the test split, build its steering vector
    and choose the steering factor on the validation split (module docstring). ``prompts``: the
    neutral prompts of the concept probability (default: the templates cut before the word)."""
    from tqdm.auto import tqdm

    site = Site.parse(site)
    hm.site_size(site)  # names the layer range
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods {bad or list(methods)}: choose from {list(METHODS)}")
    if not factors or any(not np.isfinite(f) for f in factors):
        raise ValueError(f"factors {list(factors)}: give finite steering factors, e.g. {list(FACTORS)}")
    missing = {"train", "val", "test"} - set(texts["split"])
    if missing:
        raise ValueError(f"texts lack the split(s) {sorted(missing)}: give train, val and test texts "
                         f"(concept_texts(..., splits=(0.5, 0.25, 0.25)))")
    split = {name: texts[texts.split == name].reset_index(drop=True) for name in ("train", "val", "test")}
    states = {name: text_states(hm, df.text.tolist(), site, batch_size) for name, df in split.items()}
    labels = {name: torch.tensor(df.label.to_numpy()) for name, df in split.items()}
    train_states, train_mask = states["train"]
    norm_scale = float(train_states[train_mask].norm(dim=-1).mean())  # typical state norm
    prompts = list(prompts) if prompts is not None else steering_prompts()
    if not prompts:
        raise ValueError("no steering prompts: give prompts=['It was', ...] (neutral text before a concept word)")
    ids = concept_ids(hm, texts[texts.label == 1].word.unique().tolist())
    fluency = {name: df[df.label == 0].text.tolist()[:batch_size] for name, df in split.items()}
    directions, detectors = {}, {}
    for method in tqdm(methods, desc="concept methods", leave=False, disable=len(methods) < 2):
        if method == "reft_r1":
            from .reft_r1 import train_reft_r1
            concept_train = split["train"][split["train"].label == 1].text.tolist()
            r1 = train_reft_r1(hm, site, train_states, train_mask, labels["train"], concept_train,
                               steps=reft_steps, seed=seed)
            directions[method], detectors[method] = r1.direction(), r1.scores
        else:
            v = fit_direction(method, mean_pooled(train_states, train_mask), labels["train"])
            directions[method] = v
            detectors[method] = lambda s, m, v=v: max_scores(s, m, v)
    sweep, rows = [], []
    half = max(1, len(prompts) // 2)
    val_prompts, test_prompts = prompts[:half], prompts[half:] or prompts[:half]
    for method in methods:
        vector = directions[method] * norm_scale  # (d,)
        base_prob, base_loss = steering_metrics(hm, site, vector, 0.0, val_prompts, fluency["val"], ids)
        best = (0.0, base_prob)
        for factor in factors:
            prob, loss = steering_metrics(hm, site, vector, factor, val_prompts, fluency["val"], ids)
            sweep.append({"method": method, "factor": factor, "concept_prob": prob, "loss_increase": loss - base_loss})
            if loss - base_loss <= max_loss_increase and prob > best[1]:
                best = (factor, prob)
        test_base_prob, test_base_loss = steering_metrics(hm, site, vector, 0.0, test_prompts, fluency["test"], ids)
        prob, loss = steering_metrics(hm, site, vector, best[0], test_prompts, fluency["test"], ids)
        rows.append({"method": method, "site": str(site),
                     "auroc": auroc(detectors[method](*states["test"]), labels["test"]),
                     "auroc_train": auroc(detectors[method](train_states, train_mask), labels["train"]),
                     "factor": best[0], "concept_prob_unsteered": test_base_prob, "concept_prob": prob,
                     "loss_increase": loss - test_base_loss})
    table = pd.DataFrame(rows)
    table.attrs.update(kind="concept detection", site=str(site))
    return ConceptResult(table, pd.DataFrame(sweep), directions)
