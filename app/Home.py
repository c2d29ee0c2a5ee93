"""Intervention workbench: start page. Run with `make app` (binds to 127.0.0.1:8501)."""

import streamlit as st

from ui import model_sidebar

st.set_page_config(page_title="Intervention workbench", layout="wide")
st.title("Intervention workbench")
name, hm = model_sidebar()
st.markdown(
    """
See what an intervention does to a language model's outputs. Every page computes from a fresh
start (long work shows progress and has a Cancel button) and also opens saved runs; every table
and figure can be downloaded as CSV, HTML or PNG.

- **Prompt**: next-token probabilities and generation.
- **Patching**: patch one prompt's hidden states into another's, layer by position, and watch
  the answer move.
- **Interventions**: train a steering vector and a small LoReFT on the persona set and compare
  generations with and without them; or load a saved LoReFT, DAS or steering vector.
- **Alignment**: DAS and RAVEL's Cause / Isolate / Disentangle, saved or run small here.
- **Sentiment**: fit a sentiment direction, colour each token by its projection, ablate it.
- **Memorization**: a capacity run live (loss and recited prefix per N), and saved sweeps.
- **Lens Attribution**: the logit lens per layer, and attribution patching.

Pick a page on the left. The model loads once per process; results are cached by their inputs.
"""
)
if hm is not None:
    st.success(f"Model ready: {name}")
