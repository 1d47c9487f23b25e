"""Issue 9's features on the real ComfyUI: a first-last-frame video, user LoRAs that really change
(or, at strength 0, do not change) the frames, a LoRA downloaded by URL that ComfyUI finds, a
foreign LoRA refused before queueing, the last frame, and a video input in workflow mode."""
from __future__ import annotations

import base64
import io
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from tests.comfyui.conftest import RealComfy, run_tinywan, start_image
from tests.comfyui.test_real_i2v import i2v
from tests.conftest import FIXTURES
from tests.video import decode, decode_result
from wan_worker import handler as handler_module
from wan_worker.handler import handler

END_IMAGE = base64.b64encode(start_image(96, 160)).decode()  # another aspect: fitted by the node
USER_LORA = "user/tiny_style.safetensors"


@pytest.fixture(scope="module")
def user_loras(real_comfy: RealComfy) -> dict[str, Path]:
    """A LoRA of the tiny layout, and one made for another model family, on the volume."""
    loras = real_comfy.models / "loras"
    paths = {"style": loras / USER_LORA, "foreign": loras / "user" / "sd15_style.safetensors"}
    run_tinywan(real_comfy.python, f"tw.write_lora(__import__('pathlib').Path({str(paths['style'])!r}), seed=4242)\n"
                                   f"tw.write_foreign_lora(__import__('pathlib').Path({str(paths['foreign'])!r}))")
    return paths


def test_first_last_frame_video_and_its_last_frame(real_env):
    result = handler(i2v("real-flf", end_image=END_IMAGE, return_last_frame=True))
    video = decode_result(result)
    assert result["graph"] == "flf2v"
    assert (len(video.frames), video.width, video.height) == (5, 128, 128)
    assert not video.is_blank()
    last = Image.open(io.BytesIO(base64.b64decode(result["last_frame"]))).convert("RGB")
    assert np.array_equal(np.asarray(last), video.frames[-1])
    assert not video.same_frames(decode_result(handler(i2v("real-flf-i2v"))))  # the end frame matters


def test_a_user_lora_changes_the_frames_and_strength_0_does_not(real_env, real_comfy, user_loras):
    plain = decode_result(handler(i2v("real-lora-none", seed=5)))
    styled = decode_result(handler(i2v("real-lora-on", seed=5, loras=[{"name": USER_LORA, "strength": 1.0}])))
    off = decode_result(handler(i2v("real-lora-zero", seed=5, loras=[{"name": USER_LORA, "strength": 0.0}])))
    assert not styled.is_blank() and not styled.same_frames(plain)
    assert off.same_frames(plain)
    assert "lora key not loaded" not in real_comfy.log()


def test_a_foreign_lora_is_refused_before_queueing(real_env, real_comfy, user_loras):
    before = real_comfy.prompts_received()
    result = handler(i2v("real-lora-foreign", loras=[{"high": "user/sd15_style.safetensors"}]))
    assert result["error_code"] == "LORA_INCOMPATIBLE" and "sd15_style" in result["error"]
    assert real_comfy.prompts_received() == before


@pytest.fixture
def lora_url(user_loras, monkeypatch) -> Iterator[str]:
    """The tiny LoRA served over http on 127.0.0.1 (allowed by setting, as in the stand-in tests)."""
    serve = partial(SimpleHTTPRequestHandler, directory=str(user_loras["style"].parent))
    serve.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), serve)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALLOW_HTTP_IMAGE_URLS", "true")
    monkeypatch.setenv("ALLOW_PRIVATE_IMAGE_URLS", "true")
    handler_module.worker.cache_clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{user_loras['style'].name}"
    httpd.shutdown()
    httpd.server_close()


def test_a_lora_downloaded_by_url_is_the_one_comfyui_loads(real_env, real_comfy, lora_url):
    by_url = handler(i2v("real-lora-url", seed=5, loras=[{"name": lora_url}]))
    assert by_url["loras"][0]["state"] == "downloaded" and by_url["loras"][0]["name"].startswith("wan-worker-cache/")
    assert (real_comfy.models / "loras" / by_url["loras"][0]["name"]).is_file()
    on_volume = handler(i2v("real-lora-vol", seed=5, loras=[{"name": USER_LORA}]))
    assert decode_result(by_url).same_frames(decode_result(on_volume))


def test_workflow_mode_loads_an_uploaded_mp4(real_env):
    mp4 = (FIXTURES / "success.mp4").read_bytes()
    graph: dict[str, Any] = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 8}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "video/remux",
                                                     "format": "mp4", "codec": "h264"}},
    }
    result = handler({"id": "real-media", "input": {"workflow": graph, "images": [
        {"name": "clip.mp4", "image": "data:video/mp4;base64," + base64.b64encode(mp4).decode()}]}})
    assert "error" not in result, result
    [out] = result["images"]
    video, source = decode(base64.b64decode(out["data"])), decode(mp4)
    assert (len(video.frames), video.width, video.height, video.fps) == (len(source.frames), 64, 64, 8)
