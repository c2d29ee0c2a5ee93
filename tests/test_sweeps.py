"""Batched sweeps equal one patched run per cell; figures and saved runs are complete."""

import json

import pytest
import torch

from workbench import Patch, PlanItem, Site
from workbench.cli import main
from workbench.figures import sweep_heatmap
from workbench.metrics import exact_match_prefix_length, logit_difference
from workbench.runs import load_run, save_run
from workbench.sweeps import head_sweep, patch_sweep
from conftest import tiny_model

BASE, SOURCE = "Paris is in the country of", "Rome is in the city of"


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "bert"])
@pytest.mark.parametrize("component", ["resid_pre", "mlp_out"])
def test_layer_position_sweep_equals_one_run_per_cell(family, component):
    hm = tiny_model(family, seed=1)
    df = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy", component=component, batch_size=5)
    assert len(df) == hm.n_layers * 6
    metric = logit_difference(hm.tokenizer.convert_tokens_to_ids("France"), hm.tokenizer.convert_tokens_to_ids("Italy"))
    base = hm.tokenize(BASE)
    with torch.no_grad():
        for row in df.itertuples():
            plan = [PlanItem(Site(row.layer, component), [row.position], Patch())]
            expected = metric(hm.run(BASE, plan, sources=[SOURCE]), base).item()
            assert row.value == pytest.approx(expected, abs=1e-5)
    assert df["value"].std() > 0  # cells differ: the sweep measures something


def test_head_sweep_equals_one_run_per_cell():
    hm = tiny_model("llama", seed=2)
    df = head_sweep(hm, BASE, SOURCE, target="France", foil="Italy", batch_size=7)
    assert len(df) == 3 * 4
    metric = logit_difference(hm.tokenizer.convert_tokens_to_ids("France"), hm.tokenizer.convert_tokens_to_ids("Italy"))
    with torch.no_grad():
        for row in df.itertuples():
            plan = [PlanItem(Site(row.layer, "z", head=row.head), "all", Patch())]
            expected = metric(hm.run(BASE, plan, sources=[SOURCE]), hm.tokenize(BASE)).item()
            assert row.value == pytest.approx(expected, abs=1e-5)


def test_patching_everything_at_layer_zero_gives_normalized_one_on_the_differing_token():
    hm = tiny_model("llama", seed=3)
    df = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy")
    # 'Paris' vs 'Rome' at position 0 and 'country' vs 'city' at 4: patching both would be the
    # whole source; patching a position where the tokens are equal changes nothing at layer 0.
    same = df[(df.layer == 0) & (df.token == df.source_token)]
    assert (same["normalized"].abs() < 1e-5).all()


def test_figure_and_saved_run(tmp_path):
    hm = tiny_model("gpt2")
    df = patch_sweep(hm, BASE, SOURCE, target="France", foil="Italy")
    fig = sweep_heatmap(df)
    assert fig.data[0].z.shape == (3, 6)
    assert "country" in " ".join(fig.data[0].x)
    paths = save_run(tmp_path / "run", df, {"base": BASE}, figure=fig)
    table, config = load_run(tmp_path / "run")
    assert table["value"].tolist() == df["value"].tolist()
    assert config["base"] == BASE and "saved_at" in config
    assert paths["figure"].read_text().count("plotly") > 0
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left behind


def test_exact_match_prefix_length_counts_a_first_token_mismatch():
    target = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    predicted = torch.tensor([[9, 2, 3, 4], [1, 2, 3, 4], [1, 2, 0, 4]])
    assert exact_match_prefix_length(predicted, target).tolist() == [0, 4, 2]


def test_cli_patch_writes_table_figure_and_config(tmp_path, monkeypatch, capsys):
    hm = tiny_model("llama")
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: hm)
    out = tmp_path / "cli"
    code = main(["patch", "--base", BASE, "--source", SOURCE, "--target", "France", "--foil", "Italy",
                 "--out", str(out), "--top", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "strongest 3 cells" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["base"] == BASE and config["n_layers"] == 3
    assert (out / "figure.html").exists() and (out / "results.parquet").exists()


def test_cli_reports_bad_input_without_a_traceback(monkeypatch, capsys):
    hm = tiny_model("llama")
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: hm)
    code = main(["patch", "--base", BASE, "--source", SOURCE, "--target", "the cat", "--foil", "Italy"])
    assert code == 2
    assert "'the cat' is 2 tokens" in capsys.readouterr().err
