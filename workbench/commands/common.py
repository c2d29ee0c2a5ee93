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
