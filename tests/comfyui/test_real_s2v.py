"""Sound-to-video executed by the real ComfyUI through handler(), on tiny stand-ins of the S2V model
and the wav2vec2 encoder (tests/tinywan), from generated voice-like tones. Every MP4 is decoded with
PyAV: frame count (it follows the sound), 16 fps, size, pixels, and its AAC track's length.

The product's chunk length is 77 frames (80 a chunk); these jobs run the bundled graph with its
chunk length lowered to 13 (16 frames a chunk) in a copy of workflows/ (WORKFLOWS_DIR), so one or
two chunks take seconds on a CPU. The audio nodes need torchaudio: without it this tier fails, it
does not skip.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.avgen import audio_file
from tests.comfyui.conftest import NEGATIVE, PROMPT, RealComfy, start_image
from tests.video import decode_result
from wan_worker import handler as handler_module
from wan_worker.graphs import S2V
from wan_worker.handler import handler
from wan_worker.settings import bundled_workflows_dir

CHUNK_LENGTH = 13  # 4 latent frames: 16 frames a chunk
IMAGE = base64.b64encode(start_image()).decode()
AUDIO_NODES = ("LoadAudio", "AudioEncoderLoader", "AudioEncoderEncode", "TrimAudioDuration",
               "WanSoundImageToVideo", "WanSoundImageToVideoExtend")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_audio_nodes_loaded(real_comfy: RealComfy):
    """S2V needs ComfyUI's audio node files, which import torchaudio: a ComfyUI without it is a
    broken real tier for this project, so this fails (with ComfyUI's own import error), not skips."""
    info = requests.get(f"{real_comfy.url}/object_info", timeout=30).json()
    missing = [c for c in AUDIO_NODES if c not in info]
    import_errors = [line for line in real_comfy.log().splitlines()
                     if "torchaudio" in line or "IMPORT FAILED" in line or "Cannot import" in line]
    assert not missing, (
        f"ComfyUI did not load {', '.join(missing)}: its audio nodes need torch with torchaudio "
        f"(scripts/comfyui-venv.sh installs torch 2.8 + torchaudio; rebuild COMFY_PYTHON's venv). "
        f"ComfyUI's log says: {import_errors[:5]}")


@pytest.fixture(scope="module")
def short_chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled graphs, with the S2V graph's chunk length lowered for CPU-sized jobs."""
    folder = tmp_path_factory.mktemp("workflows")
    for path in bundled_workflows_dir().glob("*.json"):
        shutil.copy(path, folder / path.name)
    graph_path = folder / S2V.file
    graph = json.loads(graph_path.read_text())
    for node in graph.values():
        if node["_meta"]["title"] in ("Sound To Video", "Extend"):
            node["inputs"]["length"] = CHUNK_LENGTH
    graph_path.write_text(json.dumps(graph))
    return folder


@pytest.fixture
def s2v_env(real_env: dict[str, str], short_chunks: Path, monkeypatch: pytest.MonkeyPatch,
            real_comfy: RealComfy) -> Iterator[dict[str, str]]:
    test_the_audio_nodes_loaded(real_comfy)
    monkeypatch.setenv("WORKFLOWS_DIR", str(short_chunks))
    handler_module.worker.cache_clear()
    yield real_env
    handler_module.worker.cache_clear()


def s2v(job_id: str, audio: bytes, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"image": IMAGE, "audio": b64(audio), "prompt": PROMPT, "negative_prompt": NEGATIVE,
                                    "width": 128, "height": 128, "seed": 7, **fields}}


def audio_track_s(result: dict[str, Any]) -> tuple[str, float]:
    """(codec, seconds) of the MP4's sound, every sample decoded."""
    import av

    with av.open(io.BytesIO(base64.b64decode(result["video"]))) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.codec_context.sample_rate


def test_one_whole_chunk_follows_the_sound(s2v_env, real_comfy: RealComfy):
    """1 s is exactly one chunk: every decoded frame but the doubled first one is kept, so this
    proves the chunk arithmetic (4 frames per latent frame, the doubled frame dropped) on ComfyUI."""
    files_before = real_comfy.files()
    result = handler(s2v("real-s2v-1", audio_file("WAV", seconds=1.0, freq=220.0)))
    video = decode_result(result)
    assert (result["graph"], result["chunks"], result["audio"]) == ("s2v", 1, True)
    assert len(video.frames) == result["length"] == 16
    assert (video.width, video.height, video.fps) == (128, 128, 16)
    assert not video.is_blank()
    codec, seconds = audio_track_s(result)
    assert codec == "aac" and seconds == pytest.approx(1.0, abs=0.05)
    assert real_comfy.files() == files_before  # uploads and outputs cleaned up


def test_two_chunks_from_a_part_of_a_longer_sound(s2v_env):
    sound = audio_file("MP3", seconds=4.0, freq=330.0)
    result = handler(s2v("real-s2v-2", sound, audio_start_s=1.0, duration_s=1.5))
    video = decode_result(result)
    assert (result["chunks"], result["length"], len(video.frames)) == (2, 24, 24)  # 16 + 8 of the second chunk
    assert result["audio_start_s"] == 1.0 and result["audio_s"] == 1.5
    assert (video.width, video.height, video.fps) == (128, 128, 16)
    assert not video.is_blank()
    codec, seconds = audio_track_s(result)
    assert codec == "aac" and seconds == pytest.approx(1.5, abs=0.06)


def test_the_sound_drives_the_frames(s2v_env):
    """Same image, prompt and seed; another sound gives other frames: the audio reaches the model."""
    low = decode_result(handler(s2v("real-s2v-low", audio_file("WAV", seconds=0.5, freq=150.0))))
    high = decode_result(handler(s2v("real-s2v-high", audio_file("WAV", seconds=0.5, freq=900.0))))
    assert len(low.frames) == len(high.frames) == 8
    assert not low.same_frames(high)
