"""The app's pages computing from a fresh start (no saved runs), through AppTest: each test checks
what the page computed against an independent recomputation (Hugging Face hidden states, a
hand-written hook, the saved files loaded again), not how many widgets it drew."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_helpers import save_tiny_model
from workbench import load_model

APP = Path(__file__).resolve().parents[1] / "app"
if str(APP) not in sys.path:  # `streamlit run app/Home.py` puts app/ on the path; pages import ui
    sys.path.insert(0, str(APP))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("compute") / "tiny-llama")


@pytest.fixture
def app_env(tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_APP_MODEL", str(tiny_folder))
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("WORKBENCH_INTERVENTIONS_DIR", raising=False)
    monkeypatch.delenv("WORKBENCH_APP_ANY_MODEL", raising=False)
    monkeypatch.delitem(sys.modules, "ui", raising=False)  # ui reads the folders from the env on import
    return tmp_path / "runs"


def open_page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP / "pages" / name), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def typed(value):
    """A figure JSON value as a list: plotly writes numpy arrays as base64 ``{dtype, bdata, shape}``."""
    import base64

    import numpy as np
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return array.reshape([int(n) for n in str(shape).split(",")] if shape else -1).tolist()
    return value


def block_output(hm, layer: int, text: str) -> torch.Tensor:
    """resid_post of ``layer`` from Hugging Face's own hidden states (T, d), no workbench hooks."""
    ids = hm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return hm.model(**ids, output_hidden_states=True).hidden_states[layer + 1][0]


# ---- Interventions: steering vector and LoReFT trained here ------------------------------------
def test_interventions_page_trains_steering_and_loreft_and_their_generations_differ(app_env, tiny_folder):
    at = open_page("3_Interventions.py")
    at.text_input(key="train_layers").input("1")
    at.number_input(key="train_epochs").set_value(3)
    at.number_input(key="train_new_tokens").set_value(4)
    at.text_area(key="train_prompts").input("the cat sat on the\nParis is in the")
    at.button(key="train_job_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    job = at.session_state["train_job"]
    assert job["status"] == "done" and job["done"] == job["total"] == 2 + 3 + 1 + 2
    shown = pd.DataFrame(job["state"]["rows_out"])
    assert list(shown["prompt"]) == ["the cat sat on the", "Paris is in the"]
    drawn = [c.value for c in at.code]  # three columns per prompt: without, steering vector, LoReFT
    assert drawn == [row[k] or "(nothing)" for row in job["state"]["rows_out"]
                     for k in ("without", "steering vector", "LoReFT")]

    # The vector is mean(persona answers) - mean(plain answers) of HF's own hidden states.
    hm = load_model(str(tiny_folder))
    source = (APP / "pages" / "3_Interventions.py").read_text()
    from reft import load_reft, generate, persona_pairs
    from workbench.steering import load_steering
    pirate = [a for _, a in persona_pairs()[:8]]
    namespace = {}
    exec(source[source.index("PLAIN = "):source.index("\n\n\ndef default_layers")], namespace)  # the page's plain set
    mean = lambda texts: torch.stack([block_output(hm, 1, t).mean(0) for t in texts]).mean(0)  # noqa: E731
    plan, meta = load_steering(job["state"]["steer_folder"])
    assert meta["site"] == "L1.resid_post"
    assert torch.allclose(plan[0].intervention.vector, mean(pirate) - mean(namespace["PLAIN"]), atol=1e-5)

    # The LoReFT column is what the saved LoReFT generates when loaded again; "without" is the base model.
    again = load_reft(job["state"]["reft_folder"], hm)
    for row in shown.itertuples():
        assert generate(again, row.prompt, 4)[0] == row.LoReFT
        assert generate(again, row.prompt, 4, intervene=False)[0] == row.without
    assert (shown["LoReFT"] != shown["without"]).any(), shown  # training changed what is generated
    assert (shown["steering vector"] != shown["without"]).any(), shown
    losses = job["state"]["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "LoReFT training loss" in at.get("plotly_chart")[0].proto.spec
    # Both were saved where the page's own picker finds them.
    folders = at.selectbox(key="folder").options
    assert any("reft-app-" in o for o in folders) and any("steer-app-" in o for o in folders)


def test_das_intervention_changes_the_generation_shown(app_env, tiny_folder, tmp_path):
    """A DAS trained by `workbench das` swaps in the source's subspace: the page's "with" top-k equals
    the same plan run outside the app, and differs from "without"."""
    from app_helpers import run_das_cli, write_known_ravel
    from workbench.das.saving import load_das
    from workbench.plan import PlanItem
    from workbench.predictions import top_k_next_tokens
    hm = load_model(str(tiny_folder))
    run_das_cli(tiny_folder, write_known_ravel(hm, tmp_path / "ravel"), app_env / "das-here", layer=1)
    das, meta = load_das(app_env / "das-here")
    at = open_page("3_Interventions.py")
    box = at.selectbox(key="folder")
    box.select_index(next(i for i, o in enumerate(box.options) if "das-here" in o)).run()
    at.text_area(key="prompt").input("the cat sat on the")
    at.text_input(key="source").input("Paris is in the country of")
    at.number_input(key="new_tokens").set_value(3).run()
    at.button(key="compare").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    out = at.session_state["compared"]
    want = top_k_next_tokens(hm, "the cat sat on the", 10, [PlanItem(meta["site"], "l1", das)],
                             ["Paris is in the country of"])
    assert out["top_with"]["token"].tolist() == want["token"].tolist()
    assert out["top_with"]["probability"].tolist() == pytest.approx(want["probability"].tolist(), abs=1e-6)
    assert not out["top_with"]["probability"].equals(out["top_without"]["probability"])
    assert [c.value for c in at.code] == [out["without"], out["with"]]  # the generations shown side by side


# ---- Sentiment: directions fitted here ---------------------------------------------------------
def test_sentiment_page_fits_then_projects_and_ablates(app_env, tiny_folder):
    at = open_page("5_Sentiment.py")
    for key, words in (("adjective_+1", "good great"), ("adjective_-1", "bad awful"), ("verb_+1", "loved"),
                       ("verb_-1", "hated")):  # words of the tiny model's vocabulary
        at.text_input(key=f"fit_{key}").input(words)
    at.text_input(key="fit_layers").input("0 1")
    at.multiselect(key="fit_methods").set_value(["mean_diff"]).run()
    at.button(key="fit_job_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    vectors = at.session_state["fit_job"]["state"]["vectors"]
    assert sorted(vectors) == ["L0.mean_diff", "L1.mean_diff"]
    at.selectbox(key="direction").set_value("L1.mean_diff")
    text = "I thought it was great , I loved it"
    at.text_area(key="text").input(text).run()
    at.button(key="project").click().run()
    projection = at.session_state["projection"]
    hm = load_model(str(tiny_folder))
    u = vectors["L1.mean_diff"].float()
    want = block_output(hm, 1, text) @ u  # (T,)
    assert projection["projection"].tolist() == pytest.approx(want.tolist(), abs=1e-5)
    at.button(key="ablate").click().run()
    assert not at.exception and not at.error
    _, before, after = at.session_state["ablation"]

    def remove_u(_module, _args, output):  # a hand-written hook: h - (h . û) û at every token
        hidden = output[0] if isinstance(output, tuple) else output
        unit = u / u.norm()
        edited = hidden - (hidden @ unit)[..., None] * unit
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    handle = hm.layout.blocks[1].register_forward_hook(remove_u)
    try:
        with torch.no_grad():
            probs = hm.model(**hm.tokenizer(text, return_tensors="pt")).logits[0, -1].softmax(-1)
    finally:
        handle.remove()
    top = probs.topk(len(after))
    assert after["probability"].tolist() == pytest.approx(top.values.tolist(), abs=1e-5)
    assert not after["probability"].equals(before["probability"])


# ---- Memorization: a capacity run live ---------------------------------------------------------
def test_memorization_page_runs_a_capacity_run_and_saves_it(app_env, tiny_folder):
    at = open_page("6_Memorization.py")
    at.text_input(key="live_ns").input("2, 4")
    at.number_input(key="live_layer").set_value(1)
    at.number_input(key="live_steps").set_value(30)
    at.text_area(key="live_text").input("the cat sat on the mat . a dog was in the city , Paris is in France !").run()
    at.button(key="live_job_start").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    rows = at.session_state["live_job"]["state"]["rows"]
    assert [r["n_tokens"] for r in rows] == [2, 4] and all(r["layer"] == 1 for r in rows)
    assert all(r["loss_final"] < r["loss_first"] for r in rows)  # trained, not just evaluated
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    drawn = {t["name"]: t["y"] for t in figure["data"]}
    assert drawn["recited prefix"] == [r["exact_prefix"] for r in rows]
    assert drawn["final loss"] == pytest.approx([r["loss_final"] for r in rows])
    saved = [p for p in app_env.glob("memorize-app-*") if (p / "config.json").is_file()]
    assert len(saved) == 1 and json.loads((saved[0] / "config.json").read_text())["command"] == "memorize-live"
    assert pd.read_parquet(saved[0] / "results.parquet")["exact_prefix"].tolist() == drawn["recited prefix"]


# ---- long work: Cancel between steps ----------------------------------------------------------
def stepwise_script():
    import streamlit as st
    import ui

    def step(i, state):
        state.setdefault("ran", []).append(i)
        if i == 1:  # the Cancel button's callback, as Streamlit runs it when the button is clicked
            ui._cancel("job")
        return f"step {i}"

    ui.stepwise("job", "Start", 5, step)
    st.write("after")


def test_cancel_stops_between_steps_and_start_runs_again(app_env):
    at = AppTest.from_function(stepwise_script, default_timeout=30)
    at.run()
    assert not at.button(key="job_start").disabled and at.button(key="job_cancel").disabled
    at.button(key="job_start").click().run()
    job = at.session_state["job"]
    assert job["status"] == "cancelled" and job["state"]["ran"] == [0, 1]
    assert at.warning[0].value == "Cancelled after 2 of 5 steps."
    at.run()  # a later rerun does not continue a cancelled job
    assert at.session_state["job"]["state"]["ran"] == [0, 1]


# ---- the model box --------------------------------------------------------------------------------
def test_model_box_offers_only_prepared_and_allowed_folders(app_env, tiny_folder, tmp_path, monkeypatch):
    allowed = tmp_path / "models"
    save_tiny_model(allowed / "mine")
    outside = save_tiny_model(tmp_path / "elsewhere")
    (allowed / "escape").symlink_to(outside, target_is_directory=True)  # a link out of the root
    monkeypatch.setenv("WORKBENCH_MODEL_ROOTS", str(allowed))
    at = open_page("1_Prompt.py")
    options = at.sidebar.selectbox(key="model").options
    assert str(tiny_folder) in options and str((allowed / "mine").resolve()) in options
    assert not any("elsewhere" in o or "escape" in o for o in options), options
    assert not [t for t in at.sidebar.text_input if t.key == "model_typed"]  # no free path without the flag
    at.sidebar.selectbox(key="model").set_value(str((allowed / "mine").resolve())).run()
    assert not at.sidebar.error and "3 layers" in at.sidebar.caption[0].value
    monkeypatch.setenv("WORKBENCH_APP_ANY_MODEL", "1")
    at = open_page("1_Prompt.py")
    at.sidebar.text_input(key="model_typed").input(str(tmp_path / "no-such-model")).run()
    assert "Could not load" in at.sidebar.error[0].value


# ---- Logit lens / attribution ------------------------------------------------------------------
def test_lens_page_last_layer_is_the_models_own_prediction(app_env, tiny_folder):
    at = open_page("8_Lens_Attribution.py")
    at.text_input(key="lens_text").input("the cat sat on the")
    at.text_input(key="lens_target").input("mat")
    at.button(key="lens_run").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    table = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "Logit lens" in json.dumps(table["layout"]["title"])
    hm = load_model(str(tiny_folder))
    with torch.no_grad():
        logits = hm.model(**hm.tokenizer("the cat sat on the", return_tensors="pt")).logits[0]  # (T, V)
    own = [hm.tokenizer.decode([i]) for i in logits.argmax(-1).tolist()]
    last_row = typed(table["data"][0]["text"])[-1]  # the last site's top token at each position
    assert [eval(t) for t in last_row] == own  # repr'd tokens, as the figure prints them
    mat = logits.softmax(-1)[:, hm.tokenizer.convert_tokens_to_ids("mat")]
    assert typed(table["data"][0]["z"])[-1] == pytest.approx(mat.tolist(), abs=1e-5)


def test_attribution_page_draws_the_estimate(app_env):
    at = open_page("8_Lens_Attribution.py")
    at.text_input(key="attr_base").input("Paris is in the country of")
    at.text_input(key="attr_source").input("Rome is in the city of")
    at.text_input(key="attr_target").input("France")
    at.text_input(key="attr_foil").input("Italy")
    at.button(key="attr_run").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert "Attribution patching" in at.get("plotly_chart")[0].proto.spec
    heads = at.dataframe[-1].value
    assert set(heads["layer"]) == {0, 1, 2} and set(heads["head"]) == {0, 1, 2, 3}
