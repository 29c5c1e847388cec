"""Hub repo ids (``owner/name``) against fake Hugging Face caches and fake local servers.

No test here reaches the network: caches are folders built in ``tmp_path`` with the
huggingface_hub layout (``models--owner--name/snapshots/<commit>/...`` + ``refs/main``), and the
"hub" and "proxy" are HTTP servers on 127.0.0.1 (or a closed port on it).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

from img2img_cli.errors import ModelError
from img2img_cli.models import TINY_DIR, load_pipeline, resolve_model
from img2img_cli.models.resolve import hub_cache_missing

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache, used by huggingface_hub (and so diffusers) in this process."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub out of offline mode (conftest sets HF_HUB_OFFLINE=1 before it is imported);
    returns a function that points it at an endpoint. The shared HTTP client is recreated so it
    reads the proxy variables of the test."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    huggingface_hub.close_session()

    def at(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)

    yield at
    huggingface_hub.close_session()


class Server:
    """An HTTP server on 127.0.0.1 that answers every request 200 (empty) and records its request lines."""

    def __init__(self):
        requests = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                requests.append(self.requestline)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


def fake_repo(cache: Path, repo_id: str, files: str = "all") -> Path:
    """The tiny model as ``repo_id`` in ``cache``: ``all`` its files, ``index`` only
    model_index.json, or ``no-unet-weights`` (an interrupted download: the blob is ``.incomplete``
    and the snapshot has no link to it). Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / COMMIT
    if files == "index":
        snap.mkdir(parents=True)
        shutil.copy(TINY_DIR / "model_index.json", snap)
    else:
        shutil.copytree(TINY_DIR, snap)
    if files == "no-unet-weights":
        (snap / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        (repo / "blobs").mkdir()
        (repo / "blobs" / ("ab" * 32 + ".incomplete")).write_bytes(b"\0" * 1000)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def write_tree(cache: Path, repo_id: str, paths: list[str]) -> None:
    """The repo's file listing, as huggingface_hub 2.x caches it after a download."""
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

    folder = cache / f"models--{repo_id.replace('/', '--')}"
    write_tree_cache(str(folder), COMMIT, {p: TreeCacheEntry(size=1, blob_id="0" * 40) for p in paths})


def tiny_files() -> list[str]:
    return sorted(str(p.relative_to(TINY_DIR)) for p in TINY_DIR.rglob("*") if p.is_file())


def one_line_within(seconds: float, fn, match: str) -> str:
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=match) as e:
        fn()
    assert time.perf_counter() - t0 < seconds
    message = str(e.value)
    assert "\n" not in message
    return message


# -- offline (HF_HUB_OFFLINE=1, set by conftest) -------------------------------------------------


def test_offline_absent_fails_at_once_saying_how_to_download(hf_cache):
    message = one_line_within(3, lambda: resolve_model("someone/not-downloaded"), "not in the Hugging Face cache")
    assert "--model someone/not-downloaded" in message
    assert "HF_HUB_OFFLINE" in message and "`hf download someone/not-downloaded`" in message


def test_offline_partial_cache_is_incomplete_not_local_files_only(hf_cache):
    fake_repo(hf_cache, "someone/half", files="index")  # only model_index.json came down
    assert hub_cache_missing("someone/half") == ["scheduler/", "text_encoder/", "tokenizer/", "unet/", "vae/"]
    message = one_line_within(3, lambda: resolve_model("someone/half"), "incomplete")
    assert "scheduler/" in message and "`hf download someone/half`" in message

    fake_repo(hf_cache, "someone/interrupted", files="no-unet-weights")
    message = one_line_within(3, lambda: resolve_model("someone/interrupted"), "incomplete")
    assert "unet/diffusion_pytorch_model.safetensors" in message and "`hf download someone/interrupted`" in message


def test_offline_complete_cache_resolves_and_loads(hf_cache):
    fake_repo(hf_cache, "someone/tiny-sd")
    spec = resolve_model("someone/tiny-sd")
    assert (spec.kind, spec.source, spec.name, spec.cached) == ("hub", "someone/tiny-sd", "someone/tiny-sd", True)
    pipe = load_pipeline(spec, device="cpu", dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert str(hf_cache) in pipe.unet.config._name_or_path


def test_tree_listing_decides_what_is_expected(hf_cache):
    # huggingface_hub 2.x keeps the repo's listing: variants and .bin copies diffusers does not
    # download are not missing; a file the pipeline loads is.
    fake_repo(hf_cache, "someone/listed")
    extra = ["unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin", "v1-5-pruned.safetensors",
             "safety_checker/model.safetensors", "README.md"]
    write_tree(hf_cache, "someone/listed", tiny_files() + extra)
    assert hub_cache_missing("someone/listed") == []
    assert resolve_model("someone/listed").cached

    fake_repo(hf_cache, "someone/sharded")
    write_tree(hf_cache, "someone/sharded", tiny_files() + [
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
    ])
    assert hub_cache_missing("someone/sharded") == [
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
    ]


# -- online (HF_HUB_OFFLINE unset), against local fakes ------------------------------------------


def test_complete_cache_makes_no_network_call_even_online(hf_cache, online, server):
    online(server.url)
    fake_repo(hf_cache, "someone/tiny-sd")
    spec = resolve_model("someone/tiny-sd")
    assert spec.cached
    load_pipeline(spec, device="cpu", dtype=torch.float32)
    assert server.requests == []


def test_partial_cache_online_is_left_to_diffusers_to_resume(hf_cache, online, server):
    online(server.url)  # a hub that answers
    fake_repo(hf_cache, "someone/half", files="index")
    spec = resolve_model("someone/half")
    assert spec.kind == "hub" and spec.cached is False  # loaded without local_files_only: diffusers fetches the rest
    assert server.requests == ["HEAD / HTTP/1.1"]


def test_unreachable_hub_fails_fast_and_clearly(hf_cache, online):
    online(f"http://127.0.0.1:{closed_port()}")
    message = one_line_within(5, lambda: resolve_model("someone/not-downloaded"), "cannot be reached")
    assert "ConnectError" in message and "`hf download someone/not-downloaded`" in message
    fake_repo(hf_cache, "someone/half", files="index")
    one_line_within(5, lambda: resolve_model("someone/half"), "incomplete in the Hugging Face cache .* cannot be reached")


def test_reachability_goes_through_the_proxy(hf_cache, online, server, monkeypatch):
    # The hub's name does not resolve here; only a client that honours HTTP_PROXY reaches it.
    online("http://hub.invalid")
    monkeypatch.setenv("HTTP_PROXY", server.url)
    spec = resolve_model("someone/not-downloaded")
    assert spec.cached is False
    assert server.requests == ["HEAD http://hub.invalid/ HTTP/1.1"]


def test_download_errors_become_one_line(hf_cache, online, monkeypatch):
    """The connection lost after resolving: huggingface_hub's error (after its own retries, here
    skipped) becomes one ModelError line saying what to do."""
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    from img2img_cli.models import ModelSpec

    def lost(*args, **kwargs):
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        except httpx2.ConnectError as e:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub") from e

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lost)
    spec = ModelSpec("hub", "someone/gone", "someone/gone", cached=False)
    with pytest.raises(ModelError, match="cannot download it from the Hugging Face hub") as e:
        load_pipeline(spec, device="cpu", dtype=torch.float32)
    assert "ConnectError: [Errno 111] Connection refused" in str(e.value)
    assert "`hf download someone/gone`" in str(e.value) and "\n" not in str(e.value)
