"""The Animate preprocessing room (wan_worker.preprocess) on tiny ONNX models with the real names
and shapes (tests/tinyonnx.py): the whole path, the drawing in pixels, the face crop, the mask, the
person choice, no person, the MP4s."""
from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tests import tinyonnx
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.preprocess import PoseModels, Preprocessed, encode_mp4, preprocess
from wan_worker.preprocess import detect, draw, face, mask, pose
from wan_worker.preprocess.geometry import Fit
from wan_worker.preprocess.pose import Pose

FW, FH = 320, 240  # driving frames
W, H = 192, 256  # the job's size (portrait: the frames are letterboxed into it)
BIG = (120.0, 30.0, 220.0, 230.0)  # the person, in frame pixels
SMALL = (20.0, 150.0, 60.0, 230.0)


def frames(n: int, lit: tuple[tuple[float, ...], ...] = (BIG,), dark: set[int] = frozenset()) -> list[np.ndarray]:
    """Grey frames with a white rectangle per lit box (the tiny detector sees a person where it is
    bright), except in the frames listed in `dark`."""
    out = []
    for i in range(n):
        f = np.full((FH, FW, 3), 60, np.uint8)
        if i not in dark:
            for x0, y0, x1, y1 in lit:
                f[int(y0):int(y1), int(x0):int(x1)] = 255
        out.append(f)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> PoseModels:
    folder = tmp_path_factory.mktemp("detection")
    det = tinyonnx.detector(folder / "yolox_l.onnx", [tinyonnx.to_detector(b, FW, FH) for b in (BIG, SMALL)])
    points = tinyonnx.to_crop(tinyonnx.standing_person(BIG), BIG)
    return PoseModels(det, tinyonnx.pose_model(folder / "dw-ll_ucoco_384.onnx", points))


def run(models: PoseModels, video: list[np.ndarray], **kw: object) -> Preprocessed:
    return preprocess(video, width=W, height=H, models=models, providers=["CPUExecutionProvider"], **kw)


def test_models_have_the_real_names_and_shapes(models: PoseModels) -> None:
    import onnxruntime as ort

    det = ort.InferenceSession(str(models.detector), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in det.get_inputs()] == [("images", [1, 3, 640, 640])]
    assert [(o.name, o.shape) for o in det.get_outputs()] == [("output", [1, 8400, 85])]
    est = ort.InferenceSession(str(models.pose), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in est.get_inputs()] == [("input", [1, 3, 384, 288])]
    assert [(o.name, o.shape) for o in est.get_outputs()] == [("simcc_x", [1, 133, 576]), ("simcc_y", [1, 133, 768])]


def test_whole_path_move(models: PoseModels) -> None:
    seen: list[tuple[int, int]] = []
    result = run(models, frames(6), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]
    assert result.frames == 6 and result.found == 6 and result.mask is None and result.background is None
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in result.pose)
    assert all(f.shape == (512, 512, 3) for f in result.face)
    # the skeleton is where the keypoints are: the neck disc's colour at the letterboxed neck point
    fit = Fit.of(FW, FH, W, H)
    kps = fit.points(tinyonnx.standing_person(BIG))
    neck = (kps[5] + kps[6]) / 2
    assert tuple(result.pose[0][int(round(neck[1])), int(round(neck[0]))]) == draw.COLOURS[1]
    # the face crop shows the driver's (white) face region
    assert result.face[0].mean() > 200


def test_whole_path_replace_mask_covers_the_person(models: PoseModels) -> None:
    result = run(models, frames(3), mode="replace")
    assert result.mask is not None and result.background is not None
    fit = Fit.of(FW, FH, W, H)
    kps = fit.points(tinyonnx.standing_person(BIG))
    m = result.mask[0]
    assert m.shape == (H, W) and set(np.unique(m)) <= {0, 255}
    for k in (0, 5, 6, 11, 12, 15, 16, 9, 10):  # head, shoulders, hips, ankles, wrists
        x, y = kps[k]
        assert m[int(y), int(x)] == 255, k
    assert m[:, :10].max() == 0  # well away from the person: background kept
    assert result.background[0].shape == (H, W, 3)
    np.testing.assert_array_equal(result.background[0], fit.image(frames(1)[0]))


def test_no_person_anywhere_is_invalid_video(models: PoseModels) -> None:
    with pytest.raises(WorkerError) as err:
        run(models, frames(4, dark=set(range(4))))
    assert err.value.code == INVALID_INPUT and "`video`" in err.value.message
    assert err.value.details["errors"][0]["field"] == "video"


def test_frames_without_the_person_reuse_the_last_pose(models: PoseModels) -> None:
    result = run(models, frames(5, dark={0, 2, 3}))
    assert result.found == 2
    for i in range(5):  # frame 0 takes the first sighting's pose, 2 and 3 the last one
        np.testing.assert_array_equal(result.pose[i], result.pose[1])
        np.testing.assert_array_equal(result.face[i], result.face[1])


def test_person_by_size(models: PoseModels) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(models.detector), providers=["CPUExecutionProvider"])
    boxes = detect.detect(session, frames(1, lit=(BIG, SMALL))[0])
    assert len(boxes) == 2
    from wan_worker.preprocess.track import Follower
    assert np.allclose(Follower(0).choose(boxes)[:4], BIG, atol=1)
    assert np.allclose(Follower(1).choose(boxes)[:4], SMALL, atol=1)
    with pytest.raises(WorkerError) as err:
        run(models, frames(2, lit=(BIG, SMALL)), person=2)
    assert err.value.details["errors"][0]["field"] == "person" and "0 to 1" in err.value.message


def test_follower_keeps_its_person_when_another_grows() -> None:
    from wan_worker.preprocess.track import Follower

    f = Follower(0)
    a, b = np.array([0, 0, 100, 200, 1.0]), np.array([300, 0, 350, 100, 1.0])
    assert f.choose(np.stack([a, b]))[0] == 0
    bigger_b = np.array([200, 0, 400, 300, 1.0])  # the other person comes closer and gets larger
    assert f.choose(np.stack([bigger_b, a + [5, 0, 5, 0, 0]]))[0] == 5


# -- units ----------------------------------------------------------------------------------------

def _pose(points: np.ndarray, score: float = 0.9) -> Pose:
    lo, hi = points[:17].min(0), points[:17].max(0)
    return Pose(points.astype(np.float32), np.full(133, score, np.float32), np.r_[lo, hi].astype(np.float32))


def test_drawing_puts_limbs_and_joints_where_the_keypoints_are() -> None:
    p = _pose(tinyonnx.standing_person((100, 20, 300, 380)))
    img = draw.draw_pose(p, 400, 400)
    pts, _ = draw.body_points(p)
    for k, colour in enumerate(draw.COLOURS):  # each joint disc in its own colour
        if k in (4, 7):  # the wrists: under the hands' first (blue) dot, drawn after, as in Wan2.2
            continue
        assert tuple(img[int(round(pts[k][1])), int(round(pts[k][0]))]) == colour, k
    # the upper arm (r-shoulder -> r-elbow), half-way: 60 % of its colour
    mid = (pts[2] + pts[3]) / 2
    assert tuple(img[int(round(mid[1])), int(round(mid[0]))]) == tuple(int(c * 0.6) for c in draw.COLOURS[2])
    # a hand line in a hue colour, and black far from the person
    assert img[5, 5].max() == 0 and img[395, 395].max() == 0
    hand = p.points[91:112]
    assert tuple(img[int(round(hand[0][1])), int(round(hand[0][0]))]) == draw.HAND_DOT
    # low scores draw nothing
    assert draw.draw_pose(_pose(p.points, 0.1), 400, 400).max() == 0


def test_drawing_widths_follow_the_canvas() -> None:
    assert draw.body_width(832, 480) == 1 and draw.body_width(1280, 720) == 2 and draw.body_width(100, 100) == 1


def _face_at(cx: float, cy: float, r: float = 20.0, jitter: float = 0.0, rng: np.random.Generator | None = None) -> Pose:
    pts = np.zeros((133, 2), np.float32)
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts[23:91] = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    if jitter and rng is not None:
        pts[23:91] += rng.normal(0, jitter, (68, 2))
    return Pose(pts, np.full(133, 0.9, np.float32), np.array([cx - r, cy - r, cx + r, cy + r], np.float32))


def test_face_box_follows_a_moving_face_and_is_steady() -> None:
    rng = np.random.default_rng(0)
    xs = [100 + 4 * i for i in range(20)]  # the face moves right 4 px a frame
    poses = [_face_at(x, 120, jitter=2.0, rng=rng) for x in xs]
    raw = [face.face_box(p) for p in poses]
    boxes = face.smooth(raw)
    centres = np.array([b[0] for b in boxes])
    assert np.abs(centres[2:-2] - np.array(xs[2:-2])).max() < 2.5  # follows, no lag
    raw_centres = np.array([b[0] for b in raw])
    steps, raw_steps = np.diff(centres[2:-2]), np.diff(raw_centres[2:-2])
    assert np.std(steps) < np.std(raw_steps) / 2  # steadier than per-frame keypoints
    assert all(55 < b[2] < 80 for b in boxes)  # side = 1.5 x the face points' extent (40 px + jitter)


def test_face_frames_crop_the_face_and_reuse_the_last_crop() -> None:
    img = np.zeros((240, 320, 3), np.uint8)
    img[100:140, 150:190] = (255, 0, 0)  # a red face
    poses = [_face_at(170, 120), None, _face_at(170, 120)]
    crops = face.face_frames([img, np.zeros_like(img), img], poses)
    assert [c.shape for c in crops] == [(512, 512, 3)] * 3
    centre = crops[0][200:312, 200:312]
    assert centre[..., 0].min() > 200 and centre[..., 1].max() < 40
    np.testing.assert_array_equal(crops[1], crops[0])  # no face: the last crop again


def test_mask_grow_and_blockify_as_the_template() -> None:
    m = np.zeros((100, 100), bool)
    m[50, 50] = True
    grown = mask.grow_mask(m, 10)
    assert grown.sum() == 2 * 10 * 11 + 1  # a diamond of radius 10 (tapered corners)
    assert grown[50, 60] and grown[40, 50] and not grown[58, 58]
    blocks = mask.blockify(grown, 8)
    assert blocks[40:48, 40:48].all() and blocks.sum() % 8 == 0
    out = mask.person_mask(_pose(tinyonnx.standing_person((100, 20, 300, 380))), 400, 400)
    assert out.dtype == np.uint8 and out[200, 200] == 255 and out[5, 5] == 0
    assert mask.person_mask(None, 64, 64).max() == 0


def test_detector_decoding_and_letterbox() -> None:
    raw = np.zeros((1, 8400, 85), np.float32)
    raw[..., 2:4] = -20
    row = tinyonnx._anchor(320, 320)
    raw[0, row, :5] = [0, 0, np.log(100 / 32), np.log(200 / 32), 0.9]
    raw[0, row, 5] = 1.0
    boxes = detect.decode(raw, ratio=0.5)
    np.testing.assert_allclose(boxes[0, :4], [540, 440, 740, 840], atol=1e-3)
    tensor, ratio = detect.prepare(np.zeros((100, 200, 3), np.uint8))
    assert tensor.shape == (1, 3, 640, 640) and ratio == 3.2 and tensor[0, 0, 400, 0] == 114


def test_pose_decoding_maps_back_to_the_frame() -> None:
    box = np.array([100, 50, 200, 250], np.float32)
    area = pose.region(box)
    assert (area[2] - area[0]) / (area[3] - area[1]) == pytest.approx(288 / 384)
    sx, sy = np.zeros((1, 133, 576)), np.zeros((1, 133, 768))
    sx[0, :, 288], sy[0, :, 384] = 0.8, 0.7  # the crop's centre
    points, scores = pose.decode(sx, sy, area)
    np.testing.assert_allclose(points[0], [150, 150], atol=1e-3)
    assert scores[0] == pytest.approx(0.7)


def _decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_mp4_encoding_round_trips(models: PoseModels) -> None:
    result = run(models, frames(4), mode="replace")
    pose_frames = _decode(result.mp4("pose"))
    assert len(pose_frames) == 4 and pose_frames[0].shape == (H, W, 3)
    assert np.abs(pose_frames[0].astype(int) - result.pose[0]).mean() < 3
    faces = _decode(result.mp4("face"))
    assert faces[0].shape == (512, 512, 3)
    masks = _decode(result.mp4("mask"))
    assert np.abs(masks[0][..., 0].astype(int) - result.mask[0]).mean() < 3
    assert set(result.videos()) == {"pose_video", "face_video", "background_video", "mask_video"}
    assert set(run(models, frames(2)).videos()) == {"pose_video", "face_video"}
    grey = [np.full((32, 48), v, np.uint8) for v in (0, 128, 255)]
    assert [int(f.mean()) for f in _decode(encode_mp4(grey))] == pytest.approx([0, 128, 255], abs=3)
    with pytest.raises(ValueError):
        encode_mp4([np.zeros((31, 48, 3), np.uint8)])


def test_missing_model_file_is_models_missing(tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as err:
        preprocess(frames(1), width=W, height=H, models=PoseModels(tmp_path / "yolox_l.onnx", tmp_path / "x.onnx"),
                   providers=["CPUExecutionProvider"])
    assert err.value.code == "MODELS_MISSING" and "yolox_l.onnx" in err.value.message


# --- the execution provider ----------------------------------------------------------------------


def test_without_a_gpu_the_cpu_provider_is_chosen_even_from_onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch):
    """onnxruntime-gpu lists CUDAExecutionProvider with or without a GPU, and asking for it on a
    machine without one crashes the process once the CUDA libraries are preloaded (seen in the
    image): the driver is asked first. This machine has no NVIDIA driver."""
    import onnxruntime as ort

    from wan_worker.preprocess import sessions

    assert sessions.cuda_devices() == 0
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sessions.default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(sessions, "cuda_devices", lambda: 1)
    assert sessions.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
