"""Shared pieces of the app's pages: the cached model, folders, and error display.

Views only: every computation is a call into the workbench packages.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # pages run as scripts; make the repo's packages importable
    sys.path.insert(0, str(ROOT))

from workbench import DEFAULT_MODEL, load_model  # noqa: E402

# Saved results and interventions are read from these folders only.
RESULTS_DIR = Path(os.environ.get("WORKBENCH_RESULTS_DIR", ROOT / "runs")).resolve()
INTERVENTIONS_DIR = Path(os.environ.get("WORKBENCH_INTERVENTIONS_DIR", RESULTS_DIR / "interventions")).resolve()
USER_ERRORS = (ValueError, IndexError, KeyError, FileNotFoundError, OSError)


@st.cache_resource(show_spinner="Loading the model (once per process)…")
def cached_model(name: str):
    """Load a model once per process; trust_remote_code is never enabled from the UI."""
    return load_model(name, trust_remote_code=False)


def model_sidebar():
    """The model chooser in the sidebar; returns (name, HookedModel) or (name, None) on error."""
    default = os.environ.get("WORKBENCH_APP_MODEL", DEFAULT_MODEL)
    name = st.sidebar.text_input("Model", value=default,
                                 help=f"'{DEFAULT_MODEL}' or a local Hugging Face folder").strip()
    try:
        hm = cached_model(name)
    except USER_ERRORS as error:
        st.sidebar.error(f"Could not load {name!r}: {error}")
        return name, None
    st.sidebar.caption(f"{hm.n_layers} layers, d={hm.layout.d_model}, {hm.layout.n_heads} heads")
    return name, hm


@contextmanager
def user_errors():
    """Show bad-input errors as a message, never as a stack trace."""
    try:
        yield
    except USER_ERRORS as error:
        st.error(str(error))


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` if it stays inside ``folder``; refuses anything that escapes it."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents and path != folder.resolve():
        raise ValueError(f"{name!r} is outside {folder}; only saved results there can be opened")
    return path


def coming_soon(what: str, issue: str) -> None:
    """What a page will do once its back end lands."""
    st.info(f"**Coming with {issue}.** {what}")
