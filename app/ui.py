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
from workbench.models import cache_dir  # noqa: E402

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


def any_model_allowed() -> bool:
    """True when the app was started with ``-- --any-model`` (or WORKBENCH_APP_ANY_MODEL=1): then the
    model box also takes any path or hub name. Otherwise it offers prepared and allowed local models."""
    return "--any-model" in sys.argv[1:] or os.environ.get("WORKBENCH_APP_ANY_MODEL") == "1"


def model_roots() -> list[Path]:
    """Folders whose Hugging Face model folders the model box offers (``WORKBENCH_MODEL_ROOTS``,
    separated by ``os.pathsep``; default: the workbench cache and ``models/`` in the repository)."""
    raw = os.environ.get("WORKBENCH_MODEL_ROOTS")
    roots = [Path(r) for r in raw.split(os.pathsep) if r] if raw else [cache_dir(), ROOT / "models"]
    return [r.expanduser().resolve() for r in roots]


def model_choices() -> list[str]:
    """The default model (once prepared), the one the app was started with (WORKBENCH_APP_MODEL),
    and every folder holding a config.json at most two levels under the allowed roots."""
    found = []
    if os.environ.get("WORKBENCH_APP_MODEL"):
        found.append(os.environ["WORKBENCH_APP_MODEL"])
    if (cache_dir() / DEFAULT_MODEL / "config.json").is_file():
        found.append(DEFAULT_MODEL)
    for root in model_roots():
        for pattern in ("*/config.json", "*/*/config.json"):
            for config in sorted(root.glob(pattern)) if root.is_dir() else []:
                try:
                    folder = inside(root, str(config.parent.relative_to(root)))
                except ValueError:  # a symlink out of the root
                    continue
                if folder != (cache_dir() / DEFAULT_MODEL).resolve():
                    found.append(str(folder))
    return list(dict.fromkeys(found)) or [DEFAULT_MODEL]


def model_sidebar():
    """The model, device and precision choosers in the sidebar; returns (name, HookedModel) or
    (name, None) on error. Every computation of a page runs on the chosen device."""
    choices = model_choices()
    name = st.sidebar.selectbox("Model", choices, key="model",
                                help="prepared models and Hugging Face folders under "
                                     + ", ".join(str(r) for r in model_roots()))
    if any_model_allowed():
        typed = st.sidebar.text_input("…or any folder or hub name", key="model_typed").strip()
        name = typed or name
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
        st.info(f"Nothing saved yet ({label.lower()}) under {' or '.join(str(r) for r in roots.values())}.")
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


# ---- downloads ------------------------------------------------------------------------------------
def _png(figure) -> bytes:
    return figure.to_image(format="png", scale=2)  # kaleido, through the Chromium it finds


def downloads(key: str, table: pd.DataFrame | None = None, figure=None, name: str = "result") -> None:
    """CSV of a table, HTML and PNG of a plotly figure; figure files are made only when clicked."""
    buttons = st.columns(6)
    if table is not None:
        buttons[0].download_button("CSV", table.to_csv(index=False), f"{name}.csv", "text/csv",
                                   key=f"{key}_csv", on_click="ignore", icon=":material/download:")
    if figure is not None:
        buttons[1].download_button("HTML", lambda: figure.to_html(include_plotlyjs=True), f"{name}.html",
                                   "text/html", key=f"{key}_html", on_click="ignore", icon=":material/download:")
        buttons[2].download_button("PNG", lambda: _png(figure), f"{name}.png", "image/png", key=f"{key}_png",
                                   on_click="ignore", icon=":material/download:")


def chart(figure, key: str, table: pd.DataFrame | None = None, name: str | None = None) -> None:
    """A plotly figure with its download buttons (and the table it was drawn from, as CSV)."""
    st.plotly_chart(figure, key=key, config={"toImageButtonOptions": {"format": "png", "filename": name or key}})
    downloads(key, table, figure, name or key)


def table_view(table: pd.DataFrame, key: str, name: str | None = None, **options) -> None:
    """A dataframe with its CSV download button."""
    st.dataframe(table, hide_index=True, key=key, **options)
    downloads(key, table, None, name or key)


# ---- long work in steps: a progress bar, a Cancel button, and resumption after a rerun ----------
def _cancel(key: str) -> None:
    job = st.session_state.get(key)
    if job is not None and job["status"] == "running":
        job["status"] = "cancelled"


def stepwise(key: str, start: str, total: int, step, disabled: bool = False) -> dict | None:
    """A ``start`` button and a Cancel button; once started, ``step(i, state) -> label`` runs for
    i = 0 … total-1 under a progress bar. Returns the job (``status``: running/done/cancelled/failed,
    ``done`` steps, the ``state`` dict the steps fill) or None before the first start.

    Streamlit stops a running script when a widget is touched and runs it again: the job lives in
    session state, so a rerun continues after the last finished step, and Cancel (its callback
    runs before the rerun) sets the flag that is checked between steps.
    """
    left, right, _ = st.columns([2, 1, 5], vertical_alignment="center")  # room for a long start label
    if left.button(start, key=f"{key}_start", type="primary", disabled=disabled):
        st.session_state[key] = {"status": "running", "done": 0, "total": total, "state": {}, "error": None}
    job = st.session_state.get(key)
    running = job is not None and job["status"] == "running"
    right.button("Cancel", key=f"{key}_cancel", on_click=_cancel, args=(key,), disabled=not running)
    if job is None:
        return None
    if running:
        bar = st.progress(job["done"] / job["total"], text=f"step {job['done'] + 1} of {job['total']}…")
        try:
            while job["done"] < job["total"] and job["status"] == "running":
                label = step(job["done"], job["state"])
                job["done"] += 1
                bar.progress(job["done"] / job["total"], text=label)
        except USER_ERRORS as error:
            job["status"], job["error"] = "failed", str(error)
        if job["status"] == "running":
            job["status"] = "done"
        bar.empty()
    if job["status"] == "cancelled":
        st.warning(f"Cancelled after {job['done']} of {job['total']} steps.")
    elif job["status"] == "failed":
        st.error(job["error"])
    return job
