"""Memorization: placeholder until its back end lands."""

import streamlit as st

from ui import coming_soon, model_sidebar

st.title("Memorization")
model_sidebar()
coming_soon("Plot memorization-capacity curves (recovered share vs text length, per layer) from saved sweeps.", "the memorization issue")
