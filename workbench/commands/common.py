"""Options shared by CLI subcommands."""

from __future__ import annotations

import argparse

import torch

from ..models import DEFAULT_MODEL

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"'{DEFAULT_MODEL}' (embedded default), a local folder, or a hub name")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:1, mps, or auto (spread the layers over the GPUs, device_map='auto')")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model folder's own Python code (off by default)")


def load_from_args(args: argparse.Namespace):
    """Load the model named by the shared options (looked up at call time, so tests can stub it)."""
    from .. import models
    return models.load_model(args.model, dtype=DTYPES[args.dtype], device=args.device,
                             trust_remote_code=args.trust_remote_code)


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the error names the value, the range and the fix).

    >>> at_least(1)("3")
    3
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give an integer >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give an integer >= {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number > 0 (learning rates, time limits).

    >>> positive("1e-3")
    0.001
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a number > 0, e.g. 1e-3") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a finite number > 0, e.g. 1e-3")
    return value


def finite(text: str) -> float:
    """An argparse type: any finite number (thresholds, offsets).

    >>> finite("-0.5")
    -0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a finite number, e.g. 0.5") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a finite number, e.g. 0.5")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0 (penalty weights such as a mask's sparsity).

    >>> non_negative("0.05")
    0.05
    """
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give a finite number >= 0, e.g. 0.05")
    return value


def check_site_args(hm, layer: int, component: str, k: int | None = None) -> None:
    """``--layer``/``--component``/``--k`` against the loaded model, before any data is prepared."""
    from ..sites import Site
    d = hm.site_size(Site(layer, component))  # names the layer range
    if k is not None and not 0 <= k <= d:
        raise ValueError(f"--k {k} out of range: the site L{layer}.{component} has hidden size {d}; "
                         f"use --k between 0 and {d}")
