"""Interventions: placeholder until its back end lands."""

import streamlit as st

from ui import coming_soon, model_sidebar

st.title("Interventions")
model_sidebar()
coming_soon("Load a saved intervention (LoReFT, DAS or a steering vector) from the interventions folder and compare generations and next-token distributions with and without it, side by side.", "the ReFT and DAS issues")
