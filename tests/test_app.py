"""Every app page through streamlit.testing's AppTest: set inputs, click, assert outputs."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import save_tiny_model

APP = Path(__file__).resolve().parents[1] / "app"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def app_env(tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_APP_MODEL", str(tiny_folder))
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(tmp_path / "runs"))
    return tiny_folder


def run_page(path: Path) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home(app_env):
    at = run_page(APP / "Home.py")
    assert "Model ready" in at.success[0].value


def test_prompt_page_predicts_and_generates(app_env):
    at = run_page(APP / "pages" / "1_Prompt.py")
    at.text_area(key="prompt").input("the cat sat on the").run()
    at.button(key="predict").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 10 and abs(table["probability"].sum()) <= 1.0 + 1e-6
    at.number_input(key="max_new").set_value(3).run()
    at.button(key="generate").click().run()
    assert "generated" in at.session_state and at.markdown


def test_prompt_page_rejects_an_empty_prompt(app_env):
    at = run_page(APP / "pages" / "1_Prompt.py")
    at.text_area(key="prompt").input("").run()
    at.button(key="predict").click().run()
    assert not at.exception
    assert "empty input" in at.error[0].value


def test_patching_page_runs_a_sweep_and_shows_a_cell(app_env):
    at = run_page(APP / "pages" / "2_Patching.py")
    at.text_input(key="base").input("Paris is in the country of")
    at.text_input(key="source").input("Rome is in the city of")
    at.text_input(key="target").input("France")
    at.text_input(key="foil").input("Italy")
    at.button(key="run").click().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="cell_layer").set_value(1).run()
    assert len(at.dataframe) == 2  # base and patched top-k side by side


def test_patching_page_explains_a_multi_token_target(app_env):
    at = run_page(APP / "pages" / "2_Patching.py")
    at.text_input(key="base").input("Paris is in the country of")
    at.text_input(key="source").input("Rome is in the city of")
    at.text_input(key="target").input("the cat")
    at.button(key="run").click().run()
    assert not at.exception
    assert "is 2 tokens" in at.error[0].value


def test_bad_model_path_is_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_APP_MODEL", str(tmp_path / "no-such-model"))
    at = run_page(APP / "pages" / "1_Prompt.py")
    assert "Could not load" in at.sidebar.error[0].value
