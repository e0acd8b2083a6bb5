"""`--download` offline: a loopback HTTP server serves tiny archives in the official formats
in place of the official URLs, and torchvision's own download, checksum and extraction code
fetches them. What lands must be where the loaders read it; a damaged download must be one
line and leave nothing behind."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torchvision.datasets as tv
from helpers import run_in_process, write_cifar_fixture, write_omniglot_fixture


class ArchiveServer:
    """Serves files by name from memory on 127.0.0.1, counting the requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # torchvision follows redirects with HEAD first
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                server.requests.append(self.path)
                data = server.files.get(self.path.lstrip("/"))
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    serving = ArchiveServer()
    yield serving
    serving.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(folder: Path, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder / name, arcname=name)
    return buffer.getvalue()


@pytest.fixture
def cifar_archive(tmp_path, server, monkeypatch):
    """CIFAR-10's URL, archive checksum and per-file checksums pointed at a tiny archive of
    the official layout served on the loopback."""
    source = tmp_path / "source"
    write_cifar_fixture(source, per_file=20)
    folder = source / "cifar-10-batches-py"
    archive = tar_gz(source, "cifar-10-batches-py")
    server.files["cifar-10-python.tar.gz"] = archive
    monkeypatch.setattr(tv.CIFAR10, "url", f"{server.url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(tv.CIFAR10, "tgz_md5", md5(archive))
    monkeypatch.setattr(tv.CIFAR10, "train_list", [[f"data_batch_{i}", md5((folder / f"data_batch_{i}").read_bytes())]
                                                   for i in range(1, 6)])
    monkeypatch.setattr(tv.CIFAR10, "test_list", [["test_batch", md5((folder / "test_batch").read_bytes())]])
    return archive


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_run_download_fetches_checks_unpacks_and_trains_then_fetches_nothing_again(
        tmp_path, server, cifar_archive, monkeypatch, capsys):
    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "new" / "data"
    args = ["run", "cifar10", "--download", "--data-root", str(data), "--model", "small-cnn", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu", "--quiet"]
    code, _, err = run_in_process([*args, "--out", str(tmp_path / "run")], None, monkeypatch, capsys)
    assert code == 0, err
    assert f"downloaded cifar-10-batches-py into {data}" in err
    assert listing(data) == ["cifar-10-batches-py", *(f"cifar-10-batches-py/{n}" for n in
                                                      [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])]
    assert (tmp_path / "run" / "results.json").exists()  # the loader read what landed
    fetched = len(server.requests)
    code, _, err = run_in_process([*args, "--out", str(tmp_path / "run2")], None, monkeypatch, capsys)
    assert code == 0 and "already in" in err and len(server.requests) == fetched  # no second download


@pytest.mark.parametrize("damage", ["truncated", "truncated, its checksum matching", "a batch file altered"])
def test_a_damaged_download_is_one_line_and_leaves_nothing(damage, tmp_path, server, cifar_archive, monkeypatch,
                                                           capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("the user's own file")
    if damage.startswith("truncated"):
        server.files["cifar-10-python.tar.gz"] = cifar_archive[:len(cifar_archive) // 2]
        if damage == "truncated, its checksum matching":  # the archive passes its checksum, fails to unpack
            monkeypatch.setattr(tv.CIFAR10, "tgz_md5", md5(server.files["cifar-10-python.tar.gz"]))
    else:
        monkeypatch.setattr(tv.CIFAR10, "test_list", [["test_batch", "0" * 32]])
    code, out, err = run_in_process(["download", "cifar10", "--data-root", str(data)], None, monkeypatch, capsys)
    said = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]  # tqdm's bar
    assert code == 2 and len(said) == 1 and "Traceback" not in err, err
    assert "--download CIFAR-10 failed" in err and "nothing was kept" in err
    assert listing(data) == ["notes.txt"]  # no archive, no half-unpacked folder, the user's file untouched
    code, _, err = run_in_process(["download", "cifar10", "--data-root", str(tmp_path / "fresh" / "data")], None,
                                  monkeypatch, capsys)
    assert code == 2 and not (tmp_path / "fresh").exists()  # the folders it made for --data-root are gone too


def test_omniglot_download_unpacks_both_sets_where_the_loader_reads_them(tmp_path, server, monkeypatch):
    from metaaugment.tasks import create_benchmark
    from metaaugment.tasks.download import download_benchmark

    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "source"
    write_omniglot_fixture(source, characters=6, drawings=4)
    sums = {}
    for part in ("images_background", "images_evaluation"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted((source / "omniglot-py" / part).rglob("*.png")):
                archive.write(path, str(path.relative_to(source / "omniglot-py")))
        server.files[f"python/{part}.zip"] = buffer.getvalue()
        sums[part] = md5(buffer.getvalue())
    monkeypatch.setattr(tv.Omniglot, "download_url_prefix", f"{server.url}/python")
    monkeypatch.setattr(tv.Omniglot, "zips_md5", sums)
    fetched = download_benchmark("omniglot", tmp_path / "data")
    assert fetched == ["omniglot-py/images_background", "omniglot-py/images_evaluation"]
    assert listing(tmp_path / "data" / "omniglot-py") == listing(source / "omniglot-py")  # no zip left beside them
    data = create_benchmark("omniglot").load(tmp_path / "data")
    assert sum(len(split.classes) for split in (data.train, data.val, data.test)) == 24


@pytest.mark.parametrize("benchmark, says", [("mini-imagenet", "learn2learn's MiniImagenet"),
                                             ("imagenet", "image-net.org"), ("digits", "needs no data")])
def test_a_benchmark_without_a_public_download_says_what_to_do_instead(benchmark, says, tmp_path, monkeypatch,
                                                                        capsys):
    code, _, err = run_in_process(["run", benchmark, "--download", "--data-root", str(tmp_path / "data"), "--out",
                                   str(tmp_path / "run")], None, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err
    assert listing(tmp_path) == []
