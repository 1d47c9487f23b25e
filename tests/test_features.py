"""Issue 9's features end to end through handler() and the stand-in ComfyUI: first-last-frame,
user LoRAs (volume and URL), any media in workflow mode, the last frame, size presets."""
from __future__ import annotations

import base64
import io
import json
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tests.conftest import FIXTURES, png_b64, write_lora
from tests.fakecomfy.validate import validate_prompt
from wan_worker import handler as handler_module
from wan_worker.handler import handler

PROMPT = "the kite climbs into the clouds"


def job(**fields) -> dict:
    return {"id": "feat-1", "input": {"image": png_b64(96, 54), "prompt": PROMPT, **fields}}


def sent_graph(fake) -> dict:
    [prompt] = [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"]
    return prompt["prompt"]


def by_class(graph: dict, class_type: str) -> list[dict]:
    return [n for n in graph.values() if n["class_type"] == class_type]


@pytest.fixture
def fake(tmp_path, volume):
    """The stand-in lists the model files really on the test volume, as ComfyUI does, so a LoRA the
    worker downloads must land where ComfyUI's `loras` search path finds it."""
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui", extra_model_paths_config=tmp_path / "extra_model_paths.yaml",
                   scan_models=True) as server:
        yield server


@pytest.fixture
def lora_server():
    """Serves /wan.safetensors (a Wan-style LoRA) on 127.0.0.1 and counts requests."""
    state = {"hits": 0, "body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state["hits"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *_a: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/wan.safetensors"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def open_urls(worker_env, monkeypatch):
    """The stand-in LoRA host is on 127.0.0.1 over http, as the image tests allow it."""
    monkeypatch.setenv("ALLOW_HTTP_IMAGE_URLS", "true")
    monkeypatch.setenv("ALLOW_PRIVATE_IMAGE_URLS", "true")
    handler_module.worker.cache_clear()


# ---------------------------------------------------------------- end frame


def test_end_image_runs_the_first_last_frame_graph(worker_env, fake):
    result = handler(job(end_image=png_b64(40, 40, (10, 200, 30)), seed=3))
    assert "error" not in result, result
    assert result["graph"] == "flf2v" and (result["width"], result["height"]) == (848, 480)  # from the start image
    graph = sent_graph(fake)
    [flf] = by_class(graph, "WanFirstLastFrameToVideo")
    assert not by_class(graph, "WanImageToVideo")
    loads = {n["_meta"]["title"]: n["inputs"]["image"] for n in by_class(graph, "LoadImage")}
    assert loads == {"Start Image": "wan_feat-1.png", "End Image": "wan_feat-1_end.png"}
    assert graph[flf["inputs"]["end_image"][0]]["_meta"]["title"] == "End Image"
    assert sorted(fake.uploads) == ["wan_feat-1.png", "wan_feat-1_end.png"]
    assert not list(fake.input_dir.rglob("*.png"))  # both inputs cleaned up


def test_end_image_dry_run_shows_it(worker_env, fake):
    result = handler(job(end_image=png_b64(40, 40), dry_run=True))
    assert result["graph"] == "flf2v"
    assert result["checks"]["end_image"]["width"] == 40 and "center-cropped" in result["checks"]["end_image"]["fit"]
    assert by_class(result["workflow"], "WanFirstLastFrameToVideo") and fake.requests == []


def test_bad_end_image_is_named(worker_env, fake):
    result = handler(job(end_image=base64.b64encode(b"not an image").decode()))
    assert result["error_code"] == "IMAGE_UNREADABLE" and "end_image" in result["error"]
    assert fake.requests == []


# ---------------------------------------------------------------- LoRAs


def test_first_last_frame_job_with_a_volume_lora_and_a_url_lora(worker_env, fake, volume, lora_server, open_urls):
    write_lora(volume / "loras" / "style" / "ink.safetensors")
    lora_server["body"] = write_lora(volume.parent / "src.safetensors").read_bytes()
    loras = [{"name": "style/ink.safetensors", "strength": 0.8},
             {"high": lora_server["url"], "high_strength": 1.2}]
    result = handler(job(end_image=png_b64(40, 40), loras=loras, seed=1))
    assert "error" not in result, result
    shown = [(lo["expert"], lo["name"].split("/")[0], lo["strength"]) for lo in result["loras"]]
    assert shown == [("high", "style", 0.8), ("low", "style", 0.8), ("high", "wan-worker-cache", 1.2)]
    graph = sent_graph(fake)
    user = {n["_meta"]["title"]: n["inputs"] for n in by_class(graph, "LoraLoaderModelOnly")
            if n["_meta"]["title"].startswith("User LoRA")}
    assert sorted(user) == ["User LoRA high 1", "User LoRA high 2", "User LoRA low 1"]
    assert user["User LoRA high 2"]["lora_name"] == result["loras"][2]["name"]
    # the stand-in listed the downloaded file as ComfyUI would, and accepted the graph
    assert fake.history(forgotten=True)[result["prompt_id"]]["status"]["completed"]
    # a second job reuses the download
    again = handler(job(loras=loras, seed=2))
    assert "error" not in again and lora_server["hits"] == 1
    assert again["loras"][2]["state"] == "cached"


def test_lora_dry_run_shows_names_and_strengths_without_downloading(worker_env, fake, lora_server, open_urls):
    result = handler(job(loras=[{"name": lora_server["url"], "strength": -0.5}], dry_run=True))
    assert [(lo["expert"], lo["strength"], lo["state"]) for lo in result["loras"]] == \
        [("high", -0.5, "to_download"), ("low", -0.5, "to_download")]
    assert lora_server["hits"] == 0
    assert len([n for n in result["workflow"].values() if n["_meta"]["title"].startswith("User LoRA")]) == 2


def test_dry_run_reports_lora_problems_as_it_reports_missing_models(worker_env, fake, volume):
    write_lora(volume / "loras" / "sdxl.safetensors", ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",))
    result = handler(job(loras=[{"low": "nope.safetensors"}, {"high": "sdxl.safetensors"}], dry_run=True))
    assert "error" not in result, result
    states = [(lo["expert"], lo["state"]) for lo in result["checks"]["loras"]]
    assert states == [("low", "missing"), ("high", "incompatible")]
    assert "nope.safetensors" in result["checks"]["loras"][0]["problem"]


def test_missing_lora_is_reported_before_comfyui(worker_env, fake, volume):
    result = handler(job(loras=[{"low": "nope.safetensors"}]))
    assert result["error_code"] == "MODELS_MISSING" and "nope.safetensors" in result["error"]
    assert "loras[0].low" in result["error"] and str(volume / "loras") in result["error"]
    assert fake.requests == []


def test_foreign_lora_is_refused_before_comfyui(worker_env, fake, volume):
    write_lora(volume / "loras" / "sdxl.safetensors", ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",))
    result = handler(job(loras=[{"name": "sdxl.safetensors"}]))
    assert result["error_code"] == "LORA_INCOMPATIBLE" and "sdxl.safetensors" in result["error"]
    assert fake.requests == []


def test_lora_download_failure_has_its_own_code(worker_env, fake, lora_server, open_urls):
    lora_server["body"] = b"<html>sign in</html>"
    result = handler(job(loras=[{"name": lora_server["url"]}]))
    assert result["error_code"] == "LORA_DOWNLOAD_FAILED" and "loras[0].name" in result["error"]
    assert fake.requests == []


def test_lora_download_reports_progress(worker_env, fake, volume, lora_server, open_urls, monkeypatch):
    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    lora_server["body"] = write_lora(volume.parent / "src.safetensors").read_bytes()
    assert "error" not in handler(job(loras=[{"name": lora_server["url"]}]))
    phases = [u["phase"] for u in updates]
    assert phases[0] == "downloading_loras" and updates[0]["bytes"] > 0
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents)  # the throttle may skip phases, never go back


# ---------------------------------------------------------------- last frame, size presets


def decoded_last_frame(mp4: bytes) -> Image.Image:
    import av

    with av.open(io.BytesIO(mp4)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    return frames[-1]


def test_return_last_frame_is_the_videos_last_decoded_frame(worker_env, fake):
    result = handler(job(return_last_frame=True))
    assert "error" not in result, result
    png = base64.b64decode(result["last_frame"])
    assert png.startswith(b"\x89PNG")
    got = Image.open(io.BytesIO(png)).convert("RGB")
    want = decoded_last_frame(base64.b64decode(result["video"]))
    assert got.size == want.size and got.tobytes() == want.tobytes()
    assert "last_frame" not in handler(job())


def test_last_frame_goes_to_s3_beside_the_video(worker_env, fake, monkeypatch, tmp_path):
    import requests

    from tests.s3server import s3_server

    with s3_server(tmp_path / "s3") as s3:
        for key, value in {"BUCKET_ENDPOINT_URL": s3.endpoint, "BUCKET_ACCESS_KEY_ID": s3.access_key,
                           "BUCKET_SECRET_ACCESS_KEY": s3.secret_key, "BUCKET_NAME": s3.bucket}.items():
            monkeypatch.setenv(key, value)
        handler_module.worker.cache_clear()
        result = handler(job(return_last_frame=True))
        assert "video_url" in result and "last_frame" not in result, result
        got = requests.get(result["last_frame_url"], timeout=10)
        assert got.status_code == 200 and got.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("fields, size", [
    ({}, (848, 480)),
    ({"resolution": "480p"}, (848, 480)),
    ({"resolution": "720p"}, (1280, 720)),
    ({"resolution": "720p", "width": 640}, (640, 368)),
    ({"resolution": "720p", "width": 512, "height": 512}, (512, 512)),
])
def test_resolution_presets(worker_env, fake, fields, size):
    result = handler(job(dry_run=True, **fields))
    assert (result["width"], result["height"]) == size


def test_720p_follows_a_portrait_image(worker_env, fake):
    result = handler({"id": "p", "input": {"image": png_b64(54, 96), "prompt": PROMPT, "resolution": "720p",
                                           "dry_run": True}})
    assert (result["width"], result["height"]) == (720, 1280)


# ---------------------------------------------------------------- any media in workflow mode


def wav_bytes(seconds: float = 0.2, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x10" * int(seconds * rate))
    return buf.getvalue()


def media_workflow() -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav"}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 16, "audio": ["3", 0]}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "video/remix",
                                                     "format": "mp4", "codec": "h264"}},
    }


def test_workflow_mode_with_an_mp4_and_a_wav(worker_env, fake):
    mp4 = (FIXTURES / "success.mp4").read_bytes()
    images = [{"name": "clip.mp4", "image": "data:video/mp4;base64," + base64.b64encode(mp4).decode()},
              {"name": "voice.wav", "image": base64.b64encode(wav_bytes()).decode()}]
    result = handler({"id": "media-1", "input": {"workflow": media_workflow(), "images": images}})
    assert "error" not in result, result
    assert sorted(fake.uploads) == ["clip.mp4", "voice.wav"]
    uploads = {r.files.get("image") for r in fake.requests if r.path == "/upload/image"}
    assert uploads == {"clip.mp4", "voice.wav"}
    [out] = result["images"]
    assert out["filename"].endswith(".mp4") and base64.b64decode(out["data"]) == fake.mp4_bytes
    assert not [p for p in fake.input_dir.rglob("*") if p.is_file()]


def test_workflow_mode_dry_run_describes_media(worker_env, fake):
    mp4 = (FIXTURES / "success.mp4").read_bytes()
    images = [{"name": "clip.mp4", "image": base64.b64encode(mp4).decode()},
              {"name": "voice.wav", "image": base64.b64encode(wav_bytes()).decode()},
              {"name": "cat.png", "image": png_b64()}]
    result = handler({"id": "media-2", "input": {"workflow": media_workflow(), "images": images, "dry_run": True}})
    kinds = [(c["name"], c["kind"], c["format"]) for c in result["checks"]["images"]]
    assert kinds == [("clip.mp4", "video", "MP4"), ("voice.wav", "audio", "WAV"), ("cat.png", "image", "PNG")]


def test_a_10_mb_mp4_is_accepted(worker_env, fake):
    big = (FIXTURES / "success.mp4").read_bytes() + b"\0" * (10 * 1000 * 1000)
    images = [{"name": "clip.mp4", "image": base64.b64encode(big).decode()},
              {"name": "voice.wav", "image": base64.b64encode(wav_bytes()).decode()}]
    result = handler({"id": "media-3", "input": {"workflow": media_workflow(), "images": images, "dry_run": True}})
    assert "error" not in result, result
    assert result["checks"]["images"][0]["bytes"] == len(big)


@pytest.mark.parametrize("name, data, code, needle", [
    ("clip.wav", (FIXTURES / "success.mp4").read_bytes(), "INVALID_INPUT", "MP4 video"),
    ("voice.mp4", wav_bytes(), "INVALID_INPUT", "WAV audio"),
    ("clip.mp4", b"just some text, not a video at all", "INVALID_INPUT", "mp4"),
    ("pic.png", b"just some text", "IMAGE_UNREADABLE", "images[0].image"),
])
def test_media_must_match_its_name(worker_env, fake, name, data, code, needle):
    images = [{"name": name, "image": base64.b64encode(data).decode()}]
    result = handler({"id": "media-4", "input": {"workflow": media_workflow(), "images": images}})
    assert result["error_code"] == code and needle in result["error"], result
    assert fake.requests == []


def test_media_over_max_input_mb(worker_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_INPUT_MB", "0.001")
    handler_module.worker.cache_clear()
    mp4 = (FIXTURES / "success.mp4").read_bytes()
    images = [{"name": "clip.mp4", "image": base64.b64encode(mp4).decode()}]
    result = handler({"id": "media-5", "input": {"workflow": media_workflow(), "images": images}})
    assert result["error_code"] == "INVALID_INPUT" and "MAX_INPUT_MB" in result["error"]


def test_media_workflow_is_valid_for_the_real_schemas(tmp_path):
    for name in ("clip.mp4", "voice.wav"):
        (tmp_path / name).write_bytes(b"")
    info = json.loads((FIXTURES / "object_info.json").read_text())
    ok, body = validate_prompt(media_workflow(), info, tmp_path)
    assert ok, body


@pytest.mark.parametrize("head, expected", [
    (b"\x00\x00\x00\x18ftypisom", ("video", "MP4")),
    (b"\x00\x00\x00\x14ftypqt  ", ("video", "MOV")),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", ("video", "WEBM")),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", ("audio", "WAV")),
    (b"ID3\x04\x00\x00", ("audio", "MP3")),
    (b"\xff\xfb\x90\x64", ("audio", "MP3")),
    (b"fLaC\x00\x00\x00\x22", ("audio", "FLAC")),
    (b"OggS\x00\x02", ("audio", "OGG")),
    (b"\x89PNG\r\n\x1a\n", ("image", "PNG")),
    (b"\x00\x00\x00\x20ftypM4A ", None),
    (b"%PDF-1.7", None),
])
def test_media_signatures(head, expected):
    from wan_worker.media import sniff

    assert sniff(head + b"\0" * 16) == expected
