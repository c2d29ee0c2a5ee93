"""CLI modules `workbench das` and `workbench ravel`: options and a clean error on unusable data."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import tiny_model
from probes import commands as ravel_commands
from workbench import cli
from workbench.commands import das as das_commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    das_commands.register(sub)
    ravel_commands.register(sub)
    return parser


def test_options_parse():
    args = _parser().parse_args(["das", "--attribute", "Country", "--others", "Continent", "--layer", "5",
                                 "--k", "4", "--method", "boundless", "--examples", "10", "5", "5"])
    assert (args.attribute, args.others, args.layer, args.k, args.method) == ("Country", ["Continent"], 5, 4, "boundless")
    assert args.examples == [10, 5, 5] and args.data == "geonames-cities" and args.position == "entity-last"
    args = _parser().parse_args(["ravel", "--methods", "pca", "das", "--max-entity-tokens", "1"])
    assert args.methods == ["pca", "das"] and args.attributes is None and args.max_entity_tokens == 1  # None: the first two
    args = _parser().parse_args(["ravel", "--attributes", "Country of Birth", "Field", "--entity-type", "verb"])
    assert args.attributes == ["Country of Birth", "Field"] and args.entity_type == "verb"
    with pytest.raises(SystemExit):
        _parser().parse_args(["ravel", "--methods", "sae"])


def test_das_on_data_the_model_does_not_know_fails_cleanly(tmp_path, monkeypatch, capsys):
    attrs = {"Paris": {"Country": "France"}, "Rome": {"Country": "Italy"}}
    files = {"entity_attributes": attrs, "attribute_to_prompts": {"Country": ["the %s is in the country of"]},
             "entity_to_split": {"Paris": "train", "Rome": "train"},
             "prompt_to_split": {"the %s is in the country of": "train"}}
    for name, obj in files.items():
        (tmp_path / f"ravel_city_{name}.json").write_text(json.dumps(obj))
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: tiny_model("llama"))
    assert {"workbench.commands.das", "probes.commands"} <= set(cli.command_modules())
    code = cli.main(["das", "--data", str(tmp_path), "--attribute", "Country", "--examples", "4", "2", "2",
                     "--layer", "1", "--k", "2", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no training examples" in capsys.readouterr().err
