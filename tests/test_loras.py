"""User LoRAs: found on the volume as ComfyUI finds them, downloaded once by URL (local HTTP server on
127.0.0.1), refused when damaged, foreign, missing, too large or on a private address."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import WAN_LORA_KEYS, model_paths_yaml, write_lora
from wan_worker import loras
from wan_worker.errors import (INVALID_INPUT, LORA_DOWNLOAD_FAILED, LORA_INCOMPATIBLE, MODEL_DAMAGED,
                               MODELS_MISSING, STARTUP_FAILED, WorkerError)
from wan_worker.images import FetchPolicy, fetch
from wan_worker.loras import LoraChoice, auth_headers, resolve, wan_key_problem
from wan_worker.settings import Settings

SDXL_KEYS = ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
             "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight")
FLUX_KEYS = ("diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight",)


@pytest.fixture
def lora_root(tmp_path: Path) -> Path:
    root = tmp_path / "volume" / "models"
    (root / "loras").mkdir(parents=True)
    model_paths_yaml(tmp_path / "extra_model_paths.yaml", root)
    return root


def settings_for(tmp_path: Path, **over) -> Settings:
    base = dict(comfy_dir=str(tmp_path / "comfyui"), extra_model_paths=str(tmp_path / "extra_model_paths.yaml"),
                allow_http_image_urls=True, allow_private_image_urls=True)
    return Settings(**{**base, **over})


def choice(source: str, expert: str = "high", strength: float = 1.0) -> LoraChoice:
    return LoraChoice(expert, source, strength, "loras[0].name")


def refused(code: str, fn: Callable[[], object]) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        fn()
    assert info.value.code == code, info.value
    return info.value


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("keys", [
    WAN_LORA_KEYS,
    ("diffusion_model.blocks.3.cross_attn.k.lora_A.weight", "diffusion_model.blocks.3.cross_attn.k.lora_B.weight"),
    ("lora_unet_blocks_0_ffn_0.lora_down.weight", "lora_unet_blocks_0_ffn_0.lora_up.weight",
     "lora_unet_blocks_0_ffn_0.alpha"),
    ("lora_unet__blocks_0_cross_attn_k.lora_down.weight",),  # Wan Fun, converted by ComfyUI
    ("diffusion_model.blocks.0.norm3.diff", "diffusion_model.blocks.0.self_attn.o.diff_b"),
])
def test_wan_keys_accepted(keys):
    assert wan_key_problem(keys) is None


@pytest.mark.parametrize("keys", [SDXL_KEYS, FLUX_KEYS, ("transformer.blocks.0.attn1.to_q.lora_A.weight",), ()])
def test_foreign_keys_refused(keys):
    problem = wan_key_problem(keys)
    assert problem and "no Wan-style keys" in problem


# ---------------------------------------------------------------- on the volume


def test_volume_lora_found_in_a_subfolder(tmp_path, lora_root):
    write_lora(lora_root / "loras" / "style" / "ink.safetensors")
    [found] = resolve([choice("style/ink.safetensors", strength=0.5)], settings_for(tmp_path), download=True)
    assert (found.name, found.state, found.choice.strength) == ("style/ink.safetensors", "ok", 0.5)
    assert found.path == str(lora_root / "loras" / "style" / "ink.safetensors")


def test_missing_volume_lora_names_it_and_the_folders(tmp_path, lora_root):
    err = refused(MODELS_MISSING, lambda: resolve([choice("nope.safetensors")], settings_for(tmp_path), True))
    assert "nope.safetensors" in err.message and str(lora_root / "loras") in err.message
    assert err.details["field"] == "loras[0].name"


def test_damaged_volume_lora(tmp_path, lora_root):
    path = write_lora(lora_root / "loras" / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-5])
    err = refused(MODEL_DAMAGED, lambda: resolve([choice("cut.safetensors")], settings_for(tmp_path), True))
    assert "cut.safetensors" in err.message and "truncated" in err.message


def test_foreign_volume_lora_refused(tmp_path, lora_root):
    write_lora(lora_root / "loras" / "sdxl.safetensors", SDXL_KEYS)
    err = refused(LORA_INCOMPATIBLE, lambda: resolve([choice("sdxl.safetensors")], settings_for(tmp_path), True))
    assert "sdxl.safetensors" in err.message and "not for Wan" in err.message


# ---------------------------------------------------------------- by URL


class LoraServer:
    """Serves LoRA files on 127.0.0.1; records every request with its headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, dict(self.headers)))
                route = outer.routes.get(self.path)
                try:
                    route(self) if route else self.send_error(404)
                except OSError:
                    pass

            def log_message(self, *_a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.httpd.server_address[1]}{path}"

    def file(self, path: str, body: bytes, declared: int | None = None, delay_s: float = 0.0) -> None:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body) if declared is None else declared))
            h.end_headers()
            time.sleep(delay_s)
            h.wfile.write(body)
        self.routes[path] = route

    def redirect(self, path: str, location: str) -> None:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = route


@pytest.fixture
def server():
    s = LoraServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def lora_bytes(tmp_path: Path, keys=WAN_LORA_KEYS, tensor_bytes: int = 16) -> bytes:
    return write_lora(tmp_path / "src" / "x.safetensors", keys, tensor_bytes).read_bytes()


def cached_files(lora_root: Path) -> list[str]:
    folder = lora_root / "loras" / loras.CACHE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_url_lora_downloaded_once_into_a_folder_comfyui_searches(tmp_path, lora_root, server):
    server.file("/wan.safetensors", lora_bytes(tmp_path))
    url = server.url("/wan.safetensors")
    settings = settings_for(tmp_path)
    seen: list[int] = []
    [first] = resolve([choice(url)], settings, True, progress=lambda done, _t: seen.append(done))
    assert first.state == "downloaded" and seen
    assert first.name == f"{loras.CACHE_FOLDER}/{loras.cache_name(url)}"
    assert Path(first.path) == lora_root / "loras" / first.name  # what ComfyUI lists as that lora_name
    [again] = resolve([choice(url)], settings, True)
    assert again.state == "cached" and len(server.requests) == 1
    assert [n for n in cached_files(lora_root) if not n.startswith(".")] == [loras.cache_name(url)]


def test_dry_run_never_downloads(tmp_path, lora_root, server):
    server.file("/wan.safetensors", lora_bytes(tmp_path))
    [planned] = resolve([choice(server.url("/wan.safetensors"))], settings_for(tmp_path), download=False)
    assert planned.state == "to_download" and planned.path is None and server.requests == []


def test_truncated_download_leaves_nothing_under_the_name(tmp_path, lora_root, server):
    body = lora_bytes(tmp_path)
    server.file("/cut.safetensors", body[:-10], declared=len(body))
    err = refused(LORA_DOWNLOAD_FAILED, lambda: resolve([choice(server.url("/cut.safetensors"))],
                                                        settings_for(tmp_path), True))
    assert "loras[0].name" in err.message
    assert not [n for n in cached_files(lora_root) if n.endswith(".safetensors")]
    assert not [n for n in cached_files(lora_root) if n.endswith(".part")]


def test_download_that_is_not_safetensors(tmp_path, lora_root, server):
    server.file("/page", b"<html>login</html>")
    err = refused(LORA_DOWNLOAD_FAILED, lambda: resolve([choice(server.url("/page"))], settings_for(tmp_path), True))
    assert "safetensors" in err.message


def test_download_too_large(tmp_path, lora_root, server):
    server.file("/big.safetensors", lora_bytes(tmp_path, tensor_bytes=400_000))
    small = settings_for(tmp_path, max_lora_mb=0.5)
    err = refused(LORA_DOWNLOAD_FAILED, lambda: resolve([choice(server.url("/big.safetensors"))], small, True))
    assert "MAX_LORA_MB" in err.message
    server.file("/liar.safetensors", lora_bytes(tmp_path, tensor_bytes=400_000), declared=100)
    refused(LORA_DOWNLOAD_FAILED, lambda: resolve([choice(server.url("/liar.safetensors"))], small, True))


def test_downloaded_foreign_lora_refused(tmp_path, lora_root, server):
    server.file("/flux.safetensors", lora_bytes(tmp_path, FLUX_KEYS))
    err = refused(LORA_INCOMPATIBLE, lambda: resolve([choice(server.url("/flux.safetensors"))],
                                                     settings_for(tmp_path), True))
    assert "not for Wan" in err.message
    assert not [n for n in cached_files(lora_root) if n.endswith(".safetensors")]


def test_two_jobs_share_one_download(tmp_path, lora_root, server):
    server.file("/slow.safetensors", lora_bytes(tmp_path), delay_s=0.5)
    url, settings = server.url("/slow.safetensors"), settings_for(tmp_path)
    results: list[object] = []

    def job() -> None:
        try:
            results.append(resolve([choice(url)], settings, True)[0].state)
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["cached", "downloaded"], results  # type: ignore[type-var]
    assert len(server.requests) == 1
    assert loras.file_problem(str(lora_root / "loras" / loras.CACHE_FOLDER / loras.cache_name(url))) is None


def test_same_url_for_both_experts_is_fetched_once(tmp_path, lora_root, server):
    server.file("/wan.safetensors", lora_bytes(tmp_path))
    url = server.url("/wan.safetensors")
    both = resolve([choice(url, "high"), choice(url, "low", 0.3)], settings_for(tmp_path), True)
    assert [(r.choice.expert, r.choice.strength) for r in both] == [("high", 1.0), ("low", 0.3)]
    assert both[0].name == both[1].name and len(server.requests) == 1


def test_private_address_refused_with_guards_on(tmp_path, lora_root, server):
    server.file("/wan.safetensors", lora_bytes(tmp_path))
    guarded = settings_for(tmp_path, allow_private_image_urls=False)
    err = refused(INVALID_INPUT, lambda: resolve([choice(server.url("/wan.safetensors"))], guarded, True))
    assert "loras[0].name" in err.message and server.requests == []


def test_redirect_to_private_address_refused(tmp_path, lora_root, server, monkeypatch):
    """127.0.0.1 plays a public host; the hop it redirects to (10.0.0.1) must be checked again."""
    from wan_worker import images

    is_public = images._is_public
    monkeypatch.setattr(images, "_is_public", lambda ip: str(ip) == "127.0.0.1" or is_public(ip))
    server.redirect("/go", "http://10.0.0.1/wan.safetensors")
    guarded = settings_for(tmp_path, allow_private_image_urls=False)
    refused(INVALID_INPUT, lambda: resolve([choice(server.url("/go"))], guarded, True))
    assert [p for p, _ in server.requests] == ["/go"]


def test_tokens_go_only_to_their_own_hosts():
    s = Settings(hf_token="hf_secret", civitai_token="cv_secret")
    assert auth_headers("huggingface.co", s) == {"Authorization": "Bearer hf_secret"}
    assert auth_headers("cdn-lfs.huggingface.co", s) == {"Authorization": "Bearer hf_secret"}
    assert auth_headers("civitai.com", s) == {"Authorization": "Bearer cv_secret"}
    for host in ("huggingface.co.evil.com", "nothuggingface.co", "cas-bridge.xethub.hf.co", "example.com",
                 "civitai.com.example.org"):
        assert auth_headers(host, s) == {}
    assert auth_headers("huggingface.co", Settings()) == {}


def test_each_redirect_hop_gets_only_its_own_hosts_headers(tmp_path, server):
    server.file("/file", b"data")
    server.redirect("/start", server.url("/file", "127.0.0.1"))
    policy = FetchPolicy("f", 1000, "X", 5, "Y",
                         headers_for=lambda host: {"X-Token": "t"} if host == "localhost" else {})
    fetch(server.url("/start", "localhost"), settings_for(tmp_path), policy, lambda _c: None)
    (first, h1), (second, h2) = server.requests
    assert (first, h1.get("X-Token")) == ("/start", "t")
    assert (second, h2.get("X-Token")) == ("/file", None)


def test_cache_dir_must_be_inside_a_loras_folder(tmp_path, lora_root, server):
    inside = settings_for(tmp_path, lora_cache_dir=str(lora_root / "loras" / "mine"))
    server.file("/wan.safetensors", lora_bytes(tmp_path))
    [got] = resolve([choice(server.url("/wan.safetensors"))], inside, True)
    assert got.name.startswith("mine/") and Path(got.path).parent == lora_root / "loras" / "mine"
    outside = settings_for(tmp_path, lora_cache_dir=str(tmp_path / "elsewhere"))
    err = refused(STARTUP_FAILED, lambda: resolve([choice(server.url("/wan.safetensors"))], outside, True))
    assert "LORA_CACHE_DIR" in err.message


def test_results_never_show_a_urls_query():
    assert loras.redact("https://civitai.com/api/download/models/1?token=abc") == \
        "https://civitai.com/api/download/models/1?…"
    assert loras.redact("style/a.safetensors") == "style/a.safetensors"
