"""The Interventions, Alignment, Sentiment and Memorization pages through AppTest, on artifacts saved
with the real back-end save paths on a tiny model (built once per module, about 20 s)."""

import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_helpers import (run_das_cli, run_ravel_cli, save_memorize_sweep, save_reft, save_sentiment_run, save_tiny_model,
                         write_known_ravel)
from workbench import load_model
from workbench.steering import save_steering

PAGES = Path(__file__).resolve().parents[1] / "app" / "pages"
if str(PAGES.parent) not in sys.path:  # `streamlit run app/Home.py` puts app/ on the path; pages import ui
    sys.path.insert(0, str(PAGES.parent))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def saved(one_thread, tmp_path_factory):
    """A tiny model folder and a results folder holding one artifact of every kind."""
    root = tmp_path_factory.mktemp("app-pages")
    model_folder = save_tiny_model(root / "tiny-llama")
    results = root / "runs"
    hm = load_model(str(model_folder))
    save_reft(hm, results / "interventions" / "reft-tiny")
    save_steering(results / "interventions" / "steer-tiny", "L1.resid_post", torch.ones(32), scale=3.0)
    data = write_known_ravel(hm, results / "data" / "ravel-tiny")
    run_das_cli(model_folder, data, results / "das-L1", layer=1)
    run_das_cli(model_folder, data, results / "das-L2", layer=2)
    run_ravel_cli(model_folder, data, results / "ravel-L1", layer=1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        save_sentiment_run(hm, results / "sentiment-tiny", monkeypatch)
    save_memorize_sweep(hm, results / "memorize-tiny", root / "words.txt")
    (root / "secret").mkdir()
    (root / "secret" / "intervention.json").write_text("{}")
    return model_folder, results


@pytest.fixture
def app_env(saved, monkeypatch):
    model_folder, results = saved
    monkeypatch.setenv("WORKBENCH_APP_MODEL", str(model_folder))
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(results))
    monkeypatch.delenv("WORKBENCH_INTERVENTIONS_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "ui", raising=False)  # ui reads the folders from the env on import
    return results


def open_page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> str:
    """All markdown and caption text on the page."""
    return "\n".join(e.value for e in list(at.markdown) + list(at.caption))


def choose(at: AppTest, key: str, text: str) -> None:
    """Pick the selectbox option whose label contains ``text``."""
    box = at.selectbox(key=key)
    matches = [o for o in box.options if text in o]
    assert matches, (text, box.options)
    box.select_index(box.options.index(matches[0])).run()
    assert not at.exception, at.exception


# ---- Interventions --------------------------------------------------------------------------
@pytest.mark.parametrize("folder, expect", [("reft-tiny", "LoReFT"), ("steer-tiny", "steering"), ("das-L1", "DAS")])
def test_interventions_page_compares_with_and_without(app_env, folder, expect):
    at = open_page("3_Interventions.py")
    choose(at, "folder", folder)
    assert expect in shown(at)
    at.text_area(key="prompt").input("the cat sat on the").run()
    at.number_input(key="new_tokens").set_value(3).run()
    at.button(key="compare").click().run()
    assert not at.exception and not at.error, at.error
    assert len(at.dataframe) == 2  # next-token top-k without and with, side by side
    assert len(at.code) == 2  # the two generations
    out = at.session_state["compared"]
    assert len(out["top_with"]) == 10
    if expect == "steering":  # a large push along one vector changes the distribution
        assert not out["top_with"]["probability"].equals(out["top_without"]["probability"])


def test_interventions_page_messages(app_env):
    at = open_page("3_Interventions.py")
    choose(at, "folder", "das-L1")
    at.text_area(key="prompt").input("   ").run()
    at.button(key="compare").click().run()
    assert "prompt is empty" in at.error[0].value
    at.text_area(key="prompt").input("the cat sat on the").run()
    at.text_input(key="positions").input("f1+x").run()
    at.button(key="compare").click().run()
    assert not at.exception and at.error


def test_a_folder_outside_the_results_is_refused(app_env):
    at = open_page("3_Interventions.py")
    at.text_input(key="folder_typed").input("../secret").run()
    assert not at.exception
    assert "outside" in at.error[0].value and "** at `" not in shown(at)
    at.text_input(key="folder_typed").input("interventions/reft-tiny").run()
    assert not at.error and "LoReFT" in shown(at)


# ---- Alignment ------------------------------------------------------------------------------
def test_alignment_page_shows_saved_scores(app_env):
    at = open_page("4_Alignment.py")
    assert not at.error, at.error
    per_layer = at.get("plotly_chart")[0].proto.spec
    assert '"DAS A \\u00b7 cause"' in per_layer or "DAS A · cause" in per_layer
    choose(at, "ravel_run", "ravel-L1")
    table = at.dataframe[0].value
    assert set(table["method"]) == {"pca", "das", "full_patch"}
    assert {"cause", "isolate", "disentangle"} <= set(table.columns)
    assert len(at.get("plotly_chart")) == 2  # IIA per layer and the Cause/Isolate/Disentangle bars


def test_alignment_page_runs_a_small_configuration(app_env):
    at = open_page("4_Alignment.py")
    choose(at, "data", "ravel-tiny")
    at.multiselect(key="attributes").set_value(["A", "B"])
    at.number_input(key="layer").set_value(1)
    at.number_input(key="k").set_value(2)
    at.multiselect(key="methods").set_value(["pca", "mean_diff"]).run()
    at.button(key="run_ravel").click().run()
    assert not at.exception and not at.error, at.error
    assert "Saved to ravel-app-" in at.success[0].value
    saved = app_env / at.success[0].value.removeprefix("Saved to ")
    assert (saved / "results.parquet").is_file() and (saved / "kept.csv").is_file()
    new = at.dataframe[-1].value
    assert list(new["method"].unique()) == ["pca", "mean_diff", "full_patch"]


def test_alignment_page_explains_a_layer_out_of_range(app_env):
    at = open_page("4_Alignment.py")
    choose(at, "data", "ravel-tiny")
    at.number_input(key="layer").set_value(7).run()
    at.button(key="run_ravel").click().run()
    assert not at.exception
    assert "model has 3 layers (0-2)" in at.error[0].value


# ---- Sentiment ------------------------------------------------------------------------------
def test_sentiment_page_colours_tokens_and_ablates(app_env):
    at = open_page("5_Sentiment.py")
    at.radio(key="origin").set_value("A saved run").run()
    choose(at, "direction", "L1.mean_diff")
    at.text_area(key="text").input("I thought it was great , I loved it").run()
    at.button(key="project").click().run()
    assert not at.exception and not at.error, at.error
    projection = at.session_state["projection"]
    assert list(projection.token) == "I thought it was great , I loved it".split()
    coloured = [m.value for m in at.markdown if "<span" in m.value][0]
    assert coloured.count("<span") == 9 and "rgba(" in coloured
    at.button(key="ablate").click().run()
    assert not at.error and len(at.dataframe) >= 3  # values, then next token without and with the ablation
    assert any("Directional patching" in c.proto.spec for c in at.get("plotly_chart"))  # the saved recovery per layer


def test_sentiment_page_rejects_an_empty_text(app_env):
    at = open_page("5_Sentiment.py")
    at.radio(key="origin").set_value("A saved run").run()
    at.text_area(key="text").input("").run()
    at.button(key="project").click().run()
    assert not at.exception and "text is empty" in at.error[0].value


# ---- Memorization ---------------------------------------------------------------------------
def test_memorization_page_draws_capacity_curves(app_env):
    at = open_page("6_Memorization.py")
    assert not at.error, at.error
    figure = at.get("plotly_chart")[0].proto.spec
    assert "layer=0" in figure and "layer=2" in figure
    capacity = at.dataframe[0].value
    assert set(capacity["layer"]) == {0, 2} and "capacity" in capacity.columns
    at.multiselect(key="layers").set_value([2]).run()
    assert set(at.dataframe[0].value["layer"]) == {2}
    at.multiselect(key="layers").set_value([]).run()
    assert "at least one layer" in at.info[0].value
