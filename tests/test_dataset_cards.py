"""datasets/: one Markdown card per registry dataset, in step with the registry; not a Python package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.data.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "datasets"


def _digests(entry) -> dict[str, int | None]:
    found = {spec.sha256: spec.size for spec in entry.files if spec.sha256}
    if entry.archive is not None:
        found[entry.archive.sha256] = entry.archive.size
    return found


def test_folder_holds_markdown_cards_only():
    assert {p.suffix for p in CARDS.iterdir()} == {".md"}
    assert not (CARDS / "__init__.py").exists()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_card_matches_the_registry(name):
    entry = REGISTRY[name]
    text = (ROOT / entry.card).read_text(encoding="utf-8")
    assert text.startswith(f"# `{name}`")
    for digest, size in _digests(entry).items():
        assert digest in text, f"{entry.card} lacks sha256 {digest}"
        if size:
            assert f"{size:,} B" in text, f"{entry.card} lacks the size {size:,} B of {digest[:12]}"
    stray = set(re.findall(r"\b[0-9a-f]{64}\b", text)) - set(_digests(entry))
    assert not stray, f"{entry.card} has sha256 values the registry does not: {stray}"
    assert entry.license.split(";")[0].split(" (")[0] in text
    for part in ("upstream", "version", "license", "size", "reader", "used by", "How it becomes examples"):
        assert part in text, f"{entry.card} lacks {part!r}"
    for spec in entry.files:
        if spec.url:
            assert spec.url.rsplit("/", 1)[0] in text.replace("{train,dev,test}", "")
    reader_module = entry.reader.rsplit(".", 1)[0].replace(".", "/")
    assert reader_module + ".py" in text  # the card points at its reader in the one data package


def test_readme_lists_every_dataset_with_its_short_digest():
    text = (CARDS / "README.md").read_text(encoding="utf-8")
    for name, entry in REGISTRY.items():
        assert f"[`{name}`]({name}.md)" in text
        main = entry.archive.sha256 if entry.archive and entry.source == "download" else \
            entry.files[0].sha256 if len(entry.files) == 1 else None
        if main:
            assert f"`{main[:8]}…{main[-4:]}`" in text, f"README row of {name} lacks {main[:8]}…{main[-4:]}"


def test_datasets_folder_never_shadows_hugging_face_datasets(tmp_path):
    """With the repository root first on sys.path, `import datasets` still finds an installed package."""
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("ORIGIN = 'installed'\n")
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import datasets; "
            "print(getattr(datasets, 'ORIGIN', 'ours'))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "site")], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "installed"


def test_import_datasets_from_the_repository_root_is_not_our_folder():
    code = "import importlib.util as u; s = u.find_spec('datasets'); print(s.origin if s else None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    origin = done.stdout.strip()
    assert origin != "None" and not origin.startswith(str(CARDS)), f"`import datasets` resolves to {origin}"
