"""Issue 16 on the stand-in tier: an Animate job from a plain driving video. The worker makes the
pose and face (and for replace, background and mask) videos itself with the tiny ONNX models of
tests/tinyonnx.py placed in the volume's detection folder, before anything is queued."""
from __future__ import annotations

import base64
import functools
import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests import tinyonnx
from tests.conftest import png_b64, sent_graph
from wan_worker.handler import handler
from wan_worker.preprocess import draw, encode_mp4
from wan_worker.preprocess.geometry import Fit
from wan_worker.preprocess.pose import Pose

FW, FH = 320, 240  # the driving video
BIG = (120.0, 30.0, 220.0, 230.0)  # the driver, in frame pixels (the tiny detector sees it where it is bright)
IMAGE = png_b64(96, 160)
W, H = 496, 816  # the job's size for that character image


def driver(frames: int = 16, lit: bool = True) -> str:
    """Grey frames with a white person-sized box (or none), 16 fps, as base64 MP4."""
    out = []
    for _ in range(frames):
        f = np.full((FH, FW, 3), 60, np.uint8)
        if lit:
            f[int(BIG[1]):int(BIG[3]), int(BIG[0]):int(BIG[2])] = 255
        out.append(f)
    return base64.b64encode(encode_mp4(out, 16)).decode()


@pytest.fixture
def fake(scanning_fake):
    return scanning_fake


@pytest.fixture
def tiny_models(volume: Path) -> Path:
    """Real tiny ONNX models over the volume's placeholders."""
    folder = volume / "detection"
    tinyonnx.detector(folder / "yolox_l.onnx", [tinyonnx.to_detector(BIG, FW, FH)])
    tinyonnx.pose_model(folder / "dw-ll_ucoco_384.onnx", tinyonnx.to_crop(tinyonnx.standing_person(BIG), BIG))
    return folder


def job(job_id: str = "animate-pre", **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"seed": 5, "prompt": "the character dances", "image": IMAGE,
                                    "video": driver(), **fields}}


def decode(b64: str) -> list[np.ndarray]:
    with av.open(io.BytesIO(base64.b64decode(b64))) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_move_job_from_a_plain_video(worker_env, fake, tiny_models, monkeypatch):
    from wan_worker import handler as handler_module
    from wan_worker.progress import Progress

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    result = handler(job(return_preprocessed=True))
    assert "error" not in result, result
    assert (result["width"], result["height"], result["frames"]) == (W, H, 16)
    names = {n["_meta"]["title"]: n["inputs"]["file"] for n in sent_graph(fake).values()
             if n["class_type"] == "LoadVideo"}
    assert set(names) == {"Pose Video", "Face Video"} and all(v.endswith(".mp4") for v in names.values())
    assert set(names.values()) <= set(fake.uploads)  # the worker's own videos were uploaded
    pre = [u for u in updates if u["phase"] == "preprocessing"]
    assert pre and pre[-1]["frame"] == pre[-1]["frames"] == 16

    pose, face = decode(result["pose_video"]), decode(result["face_video"])
    assert len(pose) == len(face) == 16
    assert pose[0].shape == (H, W, 3) and face[0].shape == (512, 512, 3)
    # the drawing matches the keypoints the tiny model encodes: the skeleton drawn from them
    # (letterboxed into the job's size) is what the MP4 shows, up to H.264's loss, and a skeleton
    # moved by 20 px is not
    kps = Fit.of(FW, FH, W, H).points(tinyonnx.standing_person(BIG)).astype(np.float32)

    def drawn(points: np.ndarray) -> np.ndarray:
        box = np.r_[points[:17].min(0), points[:17].max(0)].astype(np.float32)
        return draw.draw_pose(Pose(points, np.full(133, 0.9, np.float32), box), W, H).astype(int)

    got = pose[0].astype(int)
    expected, moved = drawn(kps), drawn(kps + 20)
    lit = expected.sum(-1) > 150
    assert lit.sum() > 1000 and (got.sum(-1)[lit] > 150).mean() > 0.9
    assert (got.sum(-1)[expected.sum(-1) == 0] < 60).mean() > 0.97
    near = lit | (moved.sum(-1) > 150)
    assert np.abs(got - expected)[near].mean() * 4 < np.abs(got - moved)[near].mean()
    assert face[0].mean() > 200  # the (white) driver's face region


def test_replace_job_from_a_plain_video(worker_env, fake, tiny_models):
    result = handler(job(mode="replace"))
    assert "error" not in result and "pose_video" not in result, result
    names = {n["_meta"]["title"] for n in sent_graph(fake).values() if n["class_type"] == "LoadVideo"}
    assert names == {"Pose Video", "Face Video", "Background Video", "Mask Video"}


def test_no_person_anywhere_is_refused_before_queueing(worker_env, fake, tiny_models):
    result = handler(job(video=driver(lit=False)))
    assert result["error_code"] == "INVALID_INPUT" and "`video`" in result["error"], result
    assert not [r for r in fake.requests if r.method == "POST"]


def test_dry_run_does_not_run_the_models(worker_env, fake, volume):
    # the placeholders are no loadable models: a dry run that ran them would fail
    result = handler(job(dry_run=True))
    assert result.get("dry_run") is True, result
    assert result["checks"]["pose_video"]["made_from"] == "video"


def test_missing_onnx_file_is_models_missing(worker_env, fake, volume):
    (volume / "detection" / "yolox_l.onnx").unlink()
    result = handler(job())
    assert result["error_code"] == "MODELS_MISSING" and "detection/yolox_l.onnx" in result["error"], result
