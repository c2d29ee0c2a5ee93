"""Shared pieces of the app's pages: the cached model, folders, and error display.

Views only: every computation is a call into the workbench packages.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from safetensors import SafetensorError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # pages run as scripts; make the repo's packages importable
    sys.path.insert(0, str(ROOT))

from workbench import DEFAULT_MODEL, load_model  # noqa: E402

# Saved results and interventions are read from these folders only.
RESULTS_DIR = Path(os.environ.get("WORKBENCH_RESULTS_DIR", ROOT / "runs")).resolve()
INTERVENTIONS_DIR = Path(os.environ.get("WORKBENCH_INTERVENTIONS_DIR", RESULTS_DIR / "interventions")).resolve()
# SafetensorError: a damaged or foreign .safetensors file among the saved results
USER_ERRORS = (ValueError, IndexError, KeyError, FileNotFoundError, OSError, SafetensorError)
MAX_DEPTH = 4  # saved runs are looked for this many folders deep


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_devices() -> list[str]:
    """Devices this machine offers, CPU first (``WORKBENCH_APP_DEVICE`` picks the default)."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@st.cache_resource(show_spinner="Loading the model (once per process)…")
def cached_model(name: str, device: str = "cpu", dtype: str = "float32"):
    """Load a model once per process and device; trust_remote_code is never enabled from the UI."""
    return load_model(name, dtype=DTYPES[dtype], device=device, trust_remote_code=False)


def chosen_device() -> tuple[str, str]:
    """(device, dtype) chosen in the sidebar this session (cpu/float32 before the sidebar ran)."""
    return st.session_state.get("device", "cpu"), st.session_state.get("dtype", "float32")


def model_sidebar():
    """The model, device and precision choosers in the sidebar; returns (name, HookedModel) or
    (name, None) on error. Every computation of a page runs on the chosen device."""
    default = os.environ.get("WORKBENCH_APP_MODEL", DEFAULT_MODEL)
    name = st.sidebar.text_input("Model", value=default,
                                 help=f"'{DEFAULT_MODEL}' or a local Hugging Face folder").strip()
    devices = available_devices()
    wanted = os.environ.get("WORKBENCH_APP_DEVICE", devices[-1] if len(devices) > 1 else "cpu")
    device = st.sidebar.selectbox("Device", devices, index=devices.index(wanted) if wanted in devices else 0,
                                  key="device")
    dtype = st.sidebar.selectbox("Precision", list(DTYPES), key="dtype",
                                 help="bfloat16/float16 halve the memory; float32 gives exact results")
    try:
        hm = cached_model(name, device, dtype)
    except USER_ERRORS as error:
        st.sidebar.error(f"Could not load {name!r}: {error}")
        return name, None
    st.sidebar.caption(f"{hm.n_layers} layers, d={hm.layout.d_model}, {hm.layout.n_heads} heads, "
                       f"{hm.device}, {str(hm.dtype).removeprefix('torch.')}")
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


# ---- saved runs: listed and opened only inside the results / interventions folders ------------
def saved_folders(root: Path, *markers: str) -> list[str]:
    """Folders under ``root`` (names relative to it) holding any of ``markers`` (file names, globs
    allowed), at most MAX_DEPTH deep; symlinks that leave ``root`` are skipped."""
    if not root.is_dir():
        return []
    found = set()
    for marker in markers:
        for depth in range(MAX_DEPTH + 1):
            for path in root.glob("/".join(["*"] * depth + [marker])):
                try:
                    folder = inside(root, str(path.parent.relative_to(root)))
                except ValueError:
                    continue
                found.add(folder.relative_to(root.resolve()).as_posix() or ".")
    return sorted(found)


def command_of(folder: Path) -> str | None:
    """The ``command`` of a saved run's ``config.json`` (``workbench.runs.save_run``), if any."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("command") if isinstance(config, dict) else None


def saved_runs_of(root: Path, command: str) -> list[str]:
    """Saved runs under ``root`` whose command is ``command`` (das, ravel, memorize-sweep, ...)."""
    return [name for name in saved_folders(root, "config.json") if command_of(root / name) == command]


def resolve_saved(name: str, roots: dict[str, Path]) -> Path:
    """``name`` as a folder inside one of ``roots`` ({label: folder}); anything else is refused."""
    name = name.strip()
    if not name:
        raise ValueError("type a folder name, e.g. one listed above")
    missing = None
    for root in roots.values():
        try:
            path = inside(root, name)
        except ValueError:
            continue
        if path.is_dir():
            return path
        missing = missing or FileNotFoundError(f"no folder {name!r} in {root}")
    if missing:
        raise missing
    raise ValueError(f"{name!r} is outside {' and '.join(str(r) for r in roots.values())}; "
                     "only saved results there can be opened")


def pick_folder(label: str, roots: dict[str, Path], markers: tuple[str, ...], key: str,
                describe=None, keep=None) -> Path | None:
    """A selectbox of saved folders under ``roots`` holding ``markers``, and a text box to type one
    (checked to stay inside the roots). Returns the chosen folder, or None (with a message)."""
    options = [(label_, name) for label_, root in roots.items() for name in saved_folders(root, *markers)
               if keep is None or keep(root / name)]
    shown = describe or (lambda lab, name: f"{lab}: {name}")
    choice = None
    if options:
        choice = st.selectbox(label, range(len(options)), key=key, format_func=lambda i: shown(*options[i]))
    typed = st.text_input(f"…or type a folder inside {' / '.join(roots)}", key=f"{key}_typed",
                          help=" and ".join(str(r) for r in roots.values()))
    if typed.strip():
        with user_errors():
            return resolve_saved(typed, roots)
        return None
    if choice is None:
        st.info(f"No saved {label.lower()} yet under {' or '.join(str(r) for r in roots.values())}.")
        return None
    lab, name = options[choice]
    return inside(roots[lab], name)


def read_table(folder: Path, name: str = "results.parquet") -> pd.DataFrame:
    """A saved table (parquet or csv) of a folder already checked with ``inside``."""
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no {name} in {folder}")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def read_json(folder: Path, name: str = "config.json") -> dict:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no {name} in {folder}")
    return json.loads(path.read_text())


def show_side_by_side(left_title: str, right_title: str, left, right) -> None:
    """Two results in two columns: markdown text or DataFrames."""
    a, b = st.columns(2)
    for column, title, value in ((a, left_title, left), (b, right_title, right)):
        column.markdown(f"**{title}**")
        if isinstance(value, pd.DataFrame):
            column.dataframe(value, hide_index=True)
        else:
            column.code(value or "(nothing)", language=None, wrap_lines=True)
