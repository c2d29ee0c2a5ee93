"""Every subcommand's documented example runs, so the docs and the behaviour cannot drift apart.

The single source of truth is each command module's docstring (the modules `workbench.cli`
registers): every indented line that starts with ``workbench `` is an example (``\\`` joins
continued lines; a line ending in ``...`` is an illustration, not run). Each example runs
in-process through `workbench.cli.main`, in a temporary working directory (so ``--out runs/...``
lands there), with `workbench.models.load_model` returning a tiny model. The test only APPENDS
flags (`EXTRA`): smaller sizes, layers the tiny model has, the offline mirror for downloads; the
later occurrence of an option wins in argparse, so the documented command is otherwise what runs.
`PROMISED` lists the files the docs say each example writes. ``das`` and ``ravel`` need a model
that answers the RAVEL queries: they run on the real SmolLM2 (marked ``slow``; an example naming
an entity type the data cache lacks is not run). ``sentiment run``
builds its ToyMovieReview prompts from the tiny tokenizer's words (the one other stub: the word
list, which a flag cannot choose).
"""

from __future__ import annotations

import importlib
import json
import re
import shlex

import pytest
from conftest import SHARED_DATA, tiny_model

from workbench import cli

REAL_MODEL = ("das", "ravel")
EXTRA = {
    "patch": [],
    "data fetch ravel": ["--from", str(SHARED_DATA / "ravel")],
    "data fetch sst": ["--from", str(SHARED_DATA / "sst")],
    "sentiment run": ["--layers", "0,1", "--ablation-layers", "0,1", "--sst-limit", "6", "--max-per-sentiment", "2",
                      "--batch-size", "8"],
    "sentiment project": ["--layer", "1"],
    "neuron score": ["--site", "L1.mlp_act", "--index", "3", "--limit", "12", "--random", "3", "--quiet"],
    "neuron find": ["--site", "L1.mlp_act", "--limit", "60", "--top-k", "2", "--random", "3", "--quiet"],
    "reft train": ["--layers", "1", "--epochs", "1", "--max-new-tokens", "2", "--max-length", "24"],
    "reft generate": ["--max-new-tokens", "2"],
    "memorize": ["--text", "alice-pg11", "--tokens", "4", "--layer", "1", "--max-steps", "2", "--quiet"],
    "memorize-sweep": ["--text", "alice-pg11", "--tokens", "2,4", "--layers", "0,1", "--max-steps", "2", "--quiet"],
    "memorize-batch": ["--text", "alice-pg11", "--tokens", "2,4", "--layer", "1", "--max-steps", "2", "--quiet"],
    "das": ["--examples", "24", "8", "8", "--entities", "30", "10", "10", "--epochs", "1", "--k", "4", "--threads", "1"],
    # the encoder study needs a BERT and RAVEL a model that answers: test_reproduce.py covers them
    "reproduce": ["--quick", "--only", "decoder_sst2,memorization,sentiment"],
    "ravel": ["--examples", "24", "8", "8", "--entities", "30", "10", "10", "--epochs", "1", "--k", "4",
              "--methods", "pca", "das", "--threads", "1"],
    # the tiny tokenizer knows no lexicon word: words it has instead
    "concepts": ["--concept-words", "good", "great", "awful", "bad", "--other-words", "cat", "dog", "mat", "city",
                 "--reft-steps", "5"],
}
PROMISED = {
    "patch": ["runs/demo-patch/results.parquet", "runs/demo-patch/figure.html", "runs/demo-patch/config.json"],
    "sentiment run": ["runs/sentiment/patching/config.json", "runs/sentiment/directions.safetensors",
                      "runs/sentiment/summary.json"],
    "sentiment project": ["runs/projection.html"],
    "neuron score": ["runs/neuron-score/summary.json", "runs/neuron-score/interventions/config.json"],
    "neuron find": ["runs/neuron-find/summary.json", "runs/neuron-find/neurons/figure.html",
                    "runs/neuron-find/ranking/results.csv"],
    "reft train": ["runs/reft-persona/config.json", "runs/reft-persona/interventions.safetensors"],
    "memorize": ["runs/mem-64/config.json", "runs/mem-64/intervention.safetensors"],
    "memorize-sweep": ["runs/mem-sweep/results.csv"],
    "memorize-batch": ["runs/mem-batch/results.csv"],
    "das": ["runs/das-country/intervention.safetensors", "runs/das-country/history.csv",
            "runs/das-country/data_report.csv", "runs/das-country/config.json"],
    "ravel": ["runs/ravel/results.parquet", "runs/ravel/figure.html", "runs/ravel/kept.csv", "runs/ravel/config.json"],
    "attribute": ["runs/attribute/results.parquet", "runs/attribute/figure.html", "runs/attribute/summary.json"],
    "concepts": ["runs/concepts/factors.csv", "runs/concepts/directions.safetensors", "runs/concepts/figure.html"],
}

# The headline numbers each command prints, which its summary.json must hold too
SUMMARY_KEYS = {
    "patch": ("runs/demo-patch", ["base_value", "source_value", "strongest"]),
    "reft train": ("runs/reft-persona", ["loss_first", "loss_final", "steps"]),
    "memorize": ("runs/mem-64", ["exact", "exact_prefix", "loss_final"]),
    "memorize-sweep": ("runs/mem-sweep", ["capacity", "runs"]),
    "memorize-batch": ("runs/mem-batch", ["runs", "run_steps_per_second"]),
    "das": ("runs/das-country", ["val_iia", "test_iia"]),
    "ravel": ("runs/ravel", ["scores", "kept"]),
    "neuron score": ("runs/neuron-score", []),
    "sentiment run": ("runs/sentiment", []),
}


def documented_examples() -> list[tuple[str, list[str]]]:
    """(module, argv) for every example line of every registered command module's docstring."""
    examples = []
    for name in cli.command_modules():
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except ModuleNotFoundError as error:  # a registered package not installed: the CLI skips it too
            if error.name != name:
                raise
            continue
        joined = re.sub(r"\\\s*\n\s*", " ", doc)  # continued lines
        for line in joined.splitlines():
            text = line.strip()
            if line.startswith(" ") and text.startswith("workbench ") and not text.endswith("..."):
                examples.append((name, shlex.split(text.split("  #")[0])[1:]))
    return examples


def key_of(argv: list[str]) -> str:
    """The EXTRA/PROMISED key: the command, its action, and for ``data fetch`` the dataset."""
    words = [w for w in argv[:3] if not w.startswith("-")]
    if words[:2] == ["data", "fetch"]:
        return " ".join(words[:3])
    two = " ".join(words[:2])
    return two if two in EXTRA or two in PROMISED else words[0]


EXAMPLES = documented_examples()


def test_every_command_documents_an_example():
    documented = {argv[0] for _, argv in EXAMPLES}
    registered = {name for name in cli.build_parser()._subparsers._group_actions[0].choices}
    assert registered <= documented, f"no documented example for {sorted(registered - documented)}"


def _run(argv, tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: model)
    key = key_of(argv)
    code = cli.main(argv + EXTRA.get(key, []))
    assert code == 0, f"`workbench {shlex.join(argv)}` exited {code}"
    missing = [p for p in PROMISED.get(key, []) if not (tmp_path / p).exists()]
    assert not missing, f"`workbench {shlex.join(argv)}` did not write {missing}"
    check_summaries(tmp_path, key, argv)


def check_summaries(root, key, argv):
    """Every saved run folder (one with config.json) has a summary.json of valid JSON, and the
    command's own summary holds the numbers it printed."""
    for config in root.rglob("config.json"):
        summary = config.parent / "summary.json"
        assert summary.is_file(), f"`workbench {shlex.join(argv)}`: {config.parent} has no summary.json"
        json.loads(summary.read_text(), parse_constant=lambda c: pytest.fail(f"{summary} holds {c}"))
    if key in SUMMARY_KEYS:
        folder, keys = SUMMARY_KEYS[key]
        summary = json.loads((root / folder / "summary.json").read_text())
        absent = [k for k in keys if summary.get(k) is None]
        assert not absent, f"{folder}/summary.json lacks {absent}: {sorted(summary)}"


def test_documented_examples_run_on_a_tiny_model(tmp_path, monkeypatch, shared_cache, capsys):
    from test_sentiment_planted import ADJECTIVES, VERBS

    from probes.sentiment import run as sentiment_run
    from workbench.data.reviews import toy_movie_reviews

    monkeypatch.setattr(sentiment_run, "toy_movie_reviews", lambda tok, *a, **k: toy_movie_reviews(
        tok, 0.5, adjectives=ADJECTIVES, verbs=VERBS))
    model = tiny_model("llama")
    ran = []
    for _, argv in EXAMPLES:  # in docstring order: `reft generate` reads what `reft train` wrote
        if argv[0] in REAL_MODEL:
            continue
        _run(argv, tmp_path, monkeypatch, model)
        ran.append(key_of(argv))
    assert {"patch", "data fetch ravel", "sentiment run", "neuron find", "reft generate", "memorize-sweep"} <= set(ran)


@pytest.mark.slow
@pytest.mark.parametrize("command", REAL_MODEL)
def test_documented_examples_run_on_the_real_model(command, tmp_path, monkeypatch, shared_cache, smollm2):
    argvs = [argv for _, argv in EXAMPLES if argv[0] == command]
    assert argvs
    for argv in argvs:
        if "--entity-type" in argv:  # the offline mirror holds RAVEL's city files only
            kind = argv[argv.index("--entity-type") + 1]
            if not any(shared_cache.rglob(f"ravel_{kind}_*")):
                continue
        _run(argv, tmp_path, monkeypatch, smollm2)
