"""The dataset registry and cache: real downloads from a local HTTP server (good and bad checksums,
an interrupted then resumed transfer, a server that ignores Range, a corrupt archive), imports with
--from, verify, and the `workbench data` commands. No failure leaves anything half-written."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SHARED_DATA
from workbench import cli
from workbench.data import fetch as F
from workbench.data.registry import REGISTRY, DatasetMissing, dataset_path, manifest

RAVEL_FILES = sorted((SHARED_DATA / "ravel").glob("*")) if (SHARED_DATA / "ravel").is_dir() else []


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path; ``server.mode``: normal, truncate_once, ignore_range."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        server, body = self.server, self.server.payload
        server.ranges.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range") and server.mode != "ignore_range":
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if server.mode == "truncate_once":
            server.mode = "normal"
            self.wfile.write(body[start:start + len(body) // 2])  # then the connection closes mid-body
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.payload, httpd.mode, httpd.ranges = b"", "normal", []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_DATA", str(root))
    return root


def _release_tgz() -> bytes:
    """A data.tgz laid out like RAVEL's (members under data/), built from the mirror's city files."""
    if not RAVEL_FILES:
        pytest.skip(f"the offline data mirror {SHARED_DATA} is absent; these tests build their archive from it")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in RAVEL_FILES:
            tar.add(path, arcname=f"data/{path.name}")
    return buffer.getvalue()


def _serve(server, payload: bytes, sha256: str | None = None):
    server.payload = payload
    entry = REGISTRY["ravel"]
    archive = dataclasses.replace(entry.archive, url=f"http://127.0.0.1:{server.server_port}/data.tgz",
                                  sha256=sha256 or hashlib.sha256(payload).hexdigest(), size=len(payload))
    return dataclasses.replace(entry, archive=archive)


def _leftovers(root) -> list[str]:
    """Anything in the cache but complete dataset folders."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.exists() else []


def test_fetch_downloads_verifies_extracts_and_records_provenance(server, cache):
    entry = _serve(server, _release_tgz())
    folder = F.fetch("ravel", progress=False, entry=entry)
    assert folder == cache / "ravel" == dataset_path("ravel", "city")
    assert (folder / "ravel_city_entity_attributes.json").exists() and (folder / "LICENSE").exists()
    assert manifest("ravel")["source"] == entry.archive.url
    assert manifest("ravel")["files"]["ravel_city_entity_attributes.json"]["verified"] is True
    assert _leftovers(cache) == []
    table = F.verify("ravel")
    assert table.set_index("file").status["ravel_city_entity_attributes.json"] == "ok"
    assert set(table[table.group == "verb"].status) == {"missing"}


def test_bad_checksum_is_refused_and_leaves_nothing(server, cache):
    entry = _serve(server, _release_tgz(), sha256="0" * 64)
    with pytest.raises(F.ChecksumError, match=r"sha256 [0-9a-f]{64}, expected 0{64}"):
        F.fetch("ravel", progress=False, entry=entry)
    assert not (cache / "ravel").exists() and _leftovers(cache) == []


def test_interrupted_download_resumes_with_range(server, cache):
    payload = _release_tgz()
    entry = _serve(server, payload)
    server.mode = "truncate_once"
    with pytest.raises(ConnectionError, match="interrupted after .* run the same command again to resume"):
        F.fetch("ravel", progress=False, entry=entry)
    assert not (cache / "ravel").exists()
    assert _leftovers(cache) == [".partial"]  # only the resumable part file, outside every dataset folder
    part = cache / ".partial" / "ravel" / "data.tgz.part"
    assert part.stat().st_size == len(payload) // 2
    F.fetch("ravel", progress=False, entry=entry)
    assert server.ranges[-1] == f"bytes={len(payload) // 2}-"  # the second request resumed
    assert (cache / "ravel" / "ravel_city_entity_attributes.json").exists() and _leftovers(cache) == []


def test_server_ignoring_range_restarts_the_download(server, cache):
    payload = _release_tgz()
    entry = _serve(server, payload)
    part = cache / ".partial" / "ravel" / "data.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    server.mode = "ignore_range"
    F.fetch("ravel", progress=False, entry=entry)
    assert server.ranges == ["bytes=29-"] and _leftovers(cache) == []
    assert F.verify("ravel").set_index("file").status["ravel_city_entity_attributes.json"] == "ok"


def test_corrupt_archive_is_refused_and_leaves_nothing(server, cache):
    good = _release_tgz()
    for payload in (b"this is not a tar archive at all" * 100, good[: len(good) // 2]):
        entry = _serve(server, payload)  # the checksum matches: the archive itself is broken
        with pytest.raises(ValueError, match=r"data.tgz is not a readable tar archive \(.+\); nothing was installed"):
            F.fetch("ravel", progress=False, entry=entry)
        assert not (cache / "ravel").exists() and _leftovers(cache) == []


def test_import_from_folder_and_archive_verifies_what_it_can(cache, tmp_path):
    if not RAVEL_FILES:
        pytest.skip(f"the offline data mirror {SHARED_DATA} is absent")
    F.import_from("ravel", SHARED_DATA)  # finds ravel/ inside the folder
    assert manifest("ravel")["source"].startswith("--from ") and F.status("ravel") == "partial (city)"
    archive = tmp_path / "copy.tgz"
    archive.write_bytes(_release_tgz())
    F.import_from("ravel", archive)
    assert manifest("ravel")["official_archive"] is False  # not the upstream data.tgz, but its files check out
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in RAVEL_FILES:
        (tampered / path.name).write_bytes(path.read_bytes())
    (tampered / "ravel_city_entity_attributes.json").write_text("{}")
    with pytest.raises(F.ChecksumError, match="ravel_city_entity_attributes.json has sha256"):
        F.import_from("ravel", tampered)
    assert F.verify("ravel").set_index("file").status["ravel_city_entity_attributes.json"] == "ok"  # old copy kept
    assert _leftovers(cache) == []
    with pytest.raises(DatasetMissing, match="sst: missing"):
        F.import_from("sst", tmp_path / "tampered")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        F.import_from("sst", tmp_path / "nowhere")


def test_missing_dataset_names_the_fetch_command(cache):
    for name in ("sst", "alice-pg11", "alice29", "ravel"):
        with pytest.raises(DatasetMissing, match=rf"not in the cache {cache}.*run `workbench data fetch {name}`"):
            dataset_path(name)


def test_package_and_code_datasets(cache, monkeypatch):
    assert set(F.verify("lexicons").status) == {"ok"} and set(F.verify("persona-instructions").status) == {"ok"}
    assert set(F.verify("toy-movie-reviews").status) == {"ok"}
    gone = dataclasses.replace(REGISTRY["lexicons"], packages=(("no_such_pkg_xyz", "no-such-pkg==1.0"),),
                               files=(F.FileSpec("no_such_pkg_xyz/lexicon.txt"),))
    monkeypatch.setitem(REGISTRY, "lexicons", gone)
    with pytest.raises(DatasetMissing, match="pip install no-such-pkg==1.0"):
        F.fetch("lexicons")


def test_data_commands(cache, capsys):
    if not RAVEL_FILES:
        pytest.skip(f"the offline data mirror {SHARED_DATA} is absent")
    assert cli.main(["data", "fetch", "ravel", "--from", str(SHARED_DATA / "ravel")]) == 0
    out = capsys.readouterr().out
    assert "present ['city']; missing ['nobel_prize_winner', 'occupation', 'physical_object', 'verb']" in out
    assert cli.main(["data", "list"]) == 0 and "partial (city)" in capsys.readouterr().out
    assert cli.main(["data", "path", "ravel"]) == 0 and capsys.readouterr().out.strip() == str(cache / "ravel")
    assert cli.main(["data", "verify", "lexicons"]) == 0
    assert cli.main(["data", "path", "sst"]) == 2
    assert "run `workbench data fetch sst`" in capsys.readouterr().err
    assert cli.main(["data", "fetch", "nope"]) == 2 and "known datasets" in capsys.readouterr().err
    (cache / "ravel" / "ravel_city_entity_attributes.json").write_text("{}")
    assert cli.main(["data", "verify", "ravel"]) == 1 and "differs from its card" in capsys.readouterr().out
