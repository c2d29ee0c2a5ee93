"""The Stanford Sentiment Treebank (the ``sst`` dataset): 5-class sentence files and the SST-2 view.

Each line of ``sst_{train,dev,test}.txt`` is ``__label__N<TAB>sentence`` (N in 1..5, Penn-Treebank
tokens). `load_sst` reads a split from the registry cache or a folder; ``binary=True`` (the
default) is SST-2. Card: ``datasets/sst.md``.

>>> parse_sst_lines(["__label__5\\tA gem .", "__label__3\\tFine ."])[["label", "sentiment"]].values.tolist()
[[5, 1]]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from .registry import dataset_path, is_name

SST_SPLITS = ("train", "dev", "test")
SST_TEMPLATE = "Review: {text}\nSentiment: This review is"
_SST_LINE = re.compile(r"^__label__(?P<label>[1-5])\t(?P<text>\S.*)$")
_PTB_FIXES = [(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1"), (r" ([,.;:!?%])", r"\1"), (r"`` ", '"'),
              (r" ''", '"'), (r"-LRB- ", "("), (r" -RRB-", ")"), (r"\$ ", "$")]


def detokenize_ptb(text: str) -> str:
    """Undo SST's Penn-Treebank tokenization so the model reads ordinary text.

    >>> detokenize_ptb("It 's a gem , is n't it ?")
    "It's a gem, isn't it?"
    """
    for pattern, replacement in _PTB_FIXES:
        text = re.sub(pattern, replacement, text)
    return text


def parse_sst_lines(lines: Iterable[str], binary: bool = True, detokenize: bool = True,
                    source: str = "<lines>") -> pd.DataFrame:
    """Lines ``__label__N<TAB>sentence`` (N in 1..5) -> DataFrame text, label, sentiment.

    ``binary`` drops neutral label 3 and maps 1-2 to -1, 4-5 to +1 (SST-2); otherwise sentiment
    is 0 for label 3.
    """
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        match = _SST_LINE.match(line)
        if match is None:
            raise ValueError(f"{source} line {number}: {line[:60]!r} is not an SST line; expected "
                             f"'__label__N<TAB>sentence' with N in 1..5")
        label = int(match.group("label"))
        if binary and label == 3:
            continue
        text = detokenize_ptb(match.group("text")) if detokenize else match.group("text")
        rows.append((text, label, (label > 3) - (label < 3)))
    if not rows:
        raise ValueError(f"{source}: no SST sentences found (binary={binary}); expected '__label__N<TAB>...' lines")
    return pd.DataFrame(rows, columns=["text", "label", "sentiment"])


def sst_folder(source: str | Path | None = "sst") -> Path:
    """The folder holding ``sst_{train,dev,test}.txt``: the registry's ``sst`` (default) or a folder.

    A missing registry dataset raises an error naming ``workbench data fetch sst``.
    """
    if source is None or (is_name(str(source)) and not Path(source).is_dir()):
        return dataset_path("sst")
    if not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"SST folder {source} does not exist; pass the folder holding sst_train/dev/test.txt, "
                                f"or use 'sst' (after `workbench data fetch sst`)")
    return Path(source).expanduser()


def load_sst(folder: str | Path | None = "sst", split: str = "dev", binary: bool = True, detokenize: bool = True,
             limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """SST sentences of one split from the registry (``"sst"``) or a folder, optionally a seeded sample.

    ``binary=True`` is the SST-2 view (label 3 dropped, 1-2 negative, 4-5 positive).

    >>> load_sst("sst", "dev").shape[0]                                 # doctest: +SKIP
    872
    """
    if split not in SST_SPLITS:
        raise ValueError(f"SST split {split!r}: expected one of {SST_SPLITS}")
    path = sst_folder(folder) / f"sst_{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; pass the folder holding sst_train/dev/test.txt, or use "
                                f"the registry's copy (`workbench data fetch sst`)")
    with open(path, encoding="utf-8") as handle:
        df = parse_sst_lines(handle, binary=binary, detokenize=detokenize, source=str(path))
    if limit is not None and limit < len(df):
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    return df


def sst2(split: str = "dev", folder: str | Path | None = "sst") -> pd.DataFrame:
    """The SST-2 view of a split: text, label (1-5), sentiment (+1 / -1); sizes 6,920 / 872 / 1,821.

    >>> len(sst2("test"))                                               # doctest: +SKIP
    1821
    """
    return load_sst(folder, split, binary=True)


def sst_prompts(texts: Iterable[str], template: str = SST_TEMPLATE) -> list[str]:
    """Zero-shot prompts for sentences; the answers are `ANSWERS` (`` good`` / `` bad``)."""
    if "{text}" not in template:
        raise ValueError(f"SST template {template!r} lacks the '{{text}}' slot")
    return [template.format(text=t) for t in texts]
