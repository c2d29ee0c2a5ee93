"""A tiny model saved as a local Hugging Face folder, for app tests (no hub, loads in < 1 s)."""

from pathlib import Path

from conftest import tiny_model


def save_tiny_model(folder: Path, family: str = "llama") -> Path:
    hm = tiny_model(family)
    hm.model.save_pretrained(folder)
    hm.tokenizer.save_pretrained(folder)
    return folder
