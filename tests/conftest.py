"""Fixtures: tiny random models of every supported family, a word-level tokenizer, the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from workbench import HookedModel

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # the offline mirror (tests only)
SHARED_DATASETS = ("ravel", "sst", "alice-pg11")  # the registry datasets the mirror holds
WORDS = ("<pad> <unk> <eos> the a movie was is in of country city Paris Rome France Italy good bad "
         "great awful I thought it loved hated , . ! ? and cat dog sat on mat capital").split()
VOCAB = 64  # word ids < len(WORDS); larger ids are valid for random-id tests


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A real (tokenizers-library) word-level tokenizer over WORDS; no files, no hub."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def _configs() -> dict:
    common = dict(vocab_size=VOCAB)
    llama = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, **common)
    return {
        "gpt2": transformers.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=2, eos_token_id=2, **common),
        "llama": transformers.LlamaConfig(**llama),
        "qwen2": transformers.Qwen2Config(**llama),
        "mistral": transformers.MistralConfig(**llama),
        "gemma": transformers.GemmaConfig(head_dim=8, **llama),
        "gemma2": transformers.Gemma2Config(head_dim=8, **llama),
        "gemma3": transformers.Gemma3TextConfig(head_dim=8, **llama),
        "gpt_neox": transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                               num_attention_heads=4, max_position_embeddings=64, **common),
        "bert": transformers.BertConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                        num_attention_heads=4, max_position_embeddings=64, **common),
    }


FAMILIES = tuple(_configs())
DECODERS = tuple(f for f in FAMILIES if f != "bert")


def tiny_model(family: str, seed: int = 0) -> HookedModel:
    """A random fp32 model of ``family`` in eval mode (eager attention, so masks are explicit)."""
    torch.manual_seed(seed)
    config = _configs()[family]
    config._attn_implementation = "eager"
    cls = transformers.BertForMaskedLM if family == "bert" else transformers.AutoModelForCausalLM
    model = cls(config) if family == "bert" else cls.from_config(config)
    model.eval()
    return HookedModel(model, word_tokenizer(), name=f"tiny-{family}")


@pytest.fixture(params=FAMILIES)
def any_family(request) -> HookedModel:
    return tiny_model(request.param)


@pytest.fixture(params=DECODERS)
def decoder(request) -> HookedModel:
    return tiny_model(request.param)


@pytest.fixture
def llama() -> HookedModel:
    return tiny_model("llama")


@pytest.fixture(scope="session")
def smollm2() -> HookedModel:
    """The real default model (prepared by `make model`; converted here if missing)."""
    from workbench import load_model
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return load_model("smollm2-135m")


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """A session dataset cache (``WORKBENCH_DATA``) prepared from the offline mirror through the
    registry's ``--from`` import, so data tests never depend on the user's cache or a network.

    Copies about 2.5 MB once per session; the model cache (``WORKBENCH_CACHE``) is untouched.
    """
    from workbench.data.fetch import import_from
    root = tmp_path_factory.mktemp("workbench-data")
    previous = os.environ.get("WORKBENCH_DATA")
    os.environ["WORKBENCH_DATA"] = str(root)
    imported = []
    if SHARED_DATA.is_dir():
        for name in SHARED_DATASETS:
            import_from(name, SHARED_DATA)
            imported.append(name)
    yield {"root": root, "imported": imported}
    if previous is None:
        os.environ.pop("WORKBENCH_DATA", None)
    else:
        os.environ["WORKBENCH_DATA"] = previous


@pytest.fixture
def shared_cache(data_cache):
    """The session cache with the mirror's datasets in it (an explicit skip names what is absent)."""
    if not data_cache["imported"]:
        pytest.skip(f"the offline data mirror {SHARED_DATA} is absent; `workbench data fetch ravel|sst|alice-pg11` "
                    f"fills a cache from upstream instead")
    return data_cache["root"]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (timing- and RSS-sensitive modules use it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
