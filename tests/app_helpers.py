"""Small saved artifacts for the app tests, written with the real back-end save paths on the tiny
model saved as a local Hugging Face folder (no hub; each takes about a second)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import WORDS, tiny_model

SPLITS = ("train", "val", "test")
TEMPLATES = ("the %s is in the", "%s is in", "the %s of", "a %s was", "in the %s ,", "I thought %s was",
             "the %s sat on", "%s and the", "%s was in the", "the %s and", "on the %s is", "a %s of the")


def save_tiny_model(folder: Path, family: str = "llama") -> Path:
    hm = tiny_model(family)
    hm.model.save_pretrained(folder)
    hm.tokenizer.save_pretrained(folder)
    return folder


def save_reft(hm, folder: Path, steps: int = 2) -> Path:
    """A LoReFT at layer 1 trained for ``steps`` optimizer steps, saved with ``reft.save_reft``."""
    from reft import ReftConfig, TrainConfig, get_reft_model, save_reft, tokenize_pairs, train
    reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="l1"))
    rows = tokenize_pairs(hm.tokenizer, [("the cat sat on", "the mat ."), ("Paris is in", "France .")])
    train(reft, rows, TrainConfig(epochs=steps, batch_size=2, lr=0.05, progress=False))
    save_reft(reft, folder)
    for p in hm.model.parameters():  # get_reft_model froze the shared model; leave it as it was
        p.requires_grad_(True)
    return folder


def _predictions(hm) -> dict[str, dict[str, str]]:
    """{template: {entity: the model's greedy next word}} over in-vocabulary words."""
    entities = [w for w in WORDS[3:] if w.isalpha()]
    found = {}
    with torch.no_grad():
        for template in TEMPLATES:
            texts = [template.replace("%s", e) for e in entities]
            logits = hm.forward(texts).logits  # (n, T, V): every prompt has the same length
            ids = logits[:, -1].argmax(-1).tolist()
            found[template] = {e: WORDS[i] for e, i in zip(entities, ids) if 3 <= i < len(WORDS)}
    return found


def write_known_ravel(hm, folder: Path, attributes=("A", "B")) -> Path:
    """A RAVEL-format folder whose 'facts' are what the tiny model predicts, so that filtering keeps
    them: per split one template per attribute and entities with at least two distinct values each."""
    preds, templates_used, entities_used, chosen = _predictions(hm), set(), set(), {}
    for split in SPLITS:
        best = None
        for a_template in TEMPLATES:
            for b_template in TEMPLATES:
                if a_template == b_template or {a_template, b_template} & templates_used:
                    continue
                ents = [e for e in preds[a_template] if e in preds[b_template] and e not in entities_used]
                distinct = [len({preds[t][e] for e in ents}) for t in (a_template, b_template)]
                if min(distinct) >= 2 and (best is None or len(ents) > len(best[2])):
                    best = (a_template, b_template, ents[:6])
        if best is None:
            raise RuntimeError("the tiny model's predictions allow no RAVEL split; change TEMPLATES")
        chosen[split] = best
        templates_used |= {best[0], best[1]}
        entities_used |= set(best[2])
    entity_attributes, prompts, entity_split, prompt_split = {}, {a: [] for a in attributes}, {}, {}
    for split, (a_template, b_template, ents) in chosen.items():
        for attribute, template in zip(attributes, (a_template, b_template)):
            prompts[attribute].append(template)
            prompt_split[template] = split
        for e in ents:
            entity_attributes[e] = {attributes[0]: preds[a_template][e], attributes[1]: preds[b_template][e]}
            entity_split[e] = split
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in (("entity_attributes", entity_attributes), ("attribute_to_prompts", prompts),
                      ("entity_to_split", entity_split), ("prompt_to_split", prompt_split)):
        (folder / f"ravel_city_{name}.json").write_text(json.dumps(obj))
    return folder


def run_das_cli(model_folder: Path, data: Path, out: Path, layer: int = 1) -> Path:
    """`workbench das` on the known data (writes intervention.json + .safetensors + results)."""
    from workbench import cli
    code = cli.main(["das", "--model", str(model_folder), "--data", str(data), "--attribute", "A", "--others", "B",
                     "--layer", str(layer), "--k", "2", "--epochs", "1", "--examples", "8", "4", "4",
                     "--out", str(out)])
    assert code == 0, f"workbench das failed with {code}"
    return out


def run_ravel_cli(model_folder: Path, data: Path, out: Path, layer: int = 1) -> Path:
    """`workbench ravel` (PCA and DAS, k=2) on the known data: the saved Cause/Isolate table."""
    from workbench import cli
    code = cli.main(["ravel", "--model", str(model_folder), "--data", str(data), "--attributes", "A", "B",
                     "--methods", "pca", "das", "--layer", str(layer), "--k", "2", "--epochs", "1",
                     "--examples", "8", "4", "4", "--out", str(out)])
    assert code == 0, f"workbench ravel failed with {code}"
    return out


def save_sentiment_run(hm, out: Path, monkeypatch) -> Path:
    """`probes.sentiment.run.run_sentiment` on in-vocabulary adjectives (no SST)."""
    import pandas as pd

    from workbench.data.reviews import toy_movie_reviews
    from probes.sentiment import run as run_module
    from probes.sentiment.run import SentimentConfig, run_sentiment
    adjectives = pd.DataFrame({"word": ["good", "great", "bad", "awful"], "sentiment": [1, 1, -1, -1]})
    verbs = pd.DataFrame({"word": ["loved", "hated"], "sentiment": [1, -1]})
    monkeypatch.setattr(run_module, "toy_movie_reviews", lambda tok, *a, **k: toy_movie_reviews(
        tok, 0.5, adjectives=adjectives, verbs=verbs))
    run_sentiment(hm, SentimentConfig(layers=(0, 1), methods=("mean_diff", "probe"), sst_folder=None,
                                      batch_size=8), out)
    return out


def save_memorize_sweep(hm, out: Path, text: Path) -> Path:
    """A two-layer memorization sweep of a few steps (`reft.memorize.memorize_sweep`)."""
    from reft.memorize import MemorizeConfig, memorize_sweep
    text.write_text("the cat sat on the mat . a dog was in the city , Paris is in France ! " * 3)
    memorize_sweep(hm, str(text), {"n_tokens": [2, 4], "layer": [0, 2]},
                   MemorizeConfig(key="the movie {i}", lr=0.05, max_steps=4), out=out, stop_after_failure=False,
                   progress=False)
    return out
