"""WARMUP against the stand-in ComfyUI: the warm-up job runs once, its failure never fails the
worker, and jobs say how long model loading took (`timings_ms.model_load`) and whether they were warm."""
from __future__ import annotations

import logging
import threading

import pytest

from tests.conftest import files_under, png_b64
from wan_worker import handler as handler_module
from wan_worker import warmup
from wan_worker.handler import handler
from wan_worker.settings import load_settings


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test is a fresh worker process: no warm-up started yet, no graph finished yet."""
    monkeypatch.setattr(warmup, "_started", threading.Lock())
    monkeypatch.setattr(handler_module, "FINISHED_GRAPHS", set())


@pytest.fixture
def fake(scanning_fake):
    """The stand-in listing every file of the test volume: each kind's models are there to warm."""
    return scanning_fake


def job(**fields) -> dict:
    return {"id": "job-1", "input": {"image": png_b64(), "prompt": "a slow pan", "seed": 1, **fields}}


def test_warm_up_runs_once_and_the_first_job_is_warm(worker_env, fake, monkeypatch, caplog):
    monkeypatch.setenv("WARMUP", "i2v")
    settings = load_settings()
    caplog.set_level(logging.INFO)
    thread = warmup.start(settings)
    assert thread is not None and warmup.start(settings) is None  # once per process
    thread.join(30)
    assert not thread.is_alive()

    [sent] = fake.prompts
    latent = next(n["inputs"] for n in sent["prompt"].values() if n["class_type"] == "WanImageToVideo")
    assert (latent["width"], latent["height"], latent["length"]) == (128, 128, 5)
    assert {n["inputs"]["steps"] for n in sent["prompt"].values() if n["class_type"] == "KSamplerAdvanced"} == {2}
    assert files_under(fake.output_dir) == [] and files_under(fake.input_dir) == []  # nothing left behind
    assert any("warm-up i2v done" in r.getMessage() for r in caplog.records)

    result = handler(job())
    assert "error" not in result, result
    assert result["warm"] is True and result["timings_ms"]["model_load"] > 0


def test_an_animate_warm_up_sends_its_own_control_videos_and_the_first_animate_job_is_warm(
        worker_env, fake, monkeypatch, caplog):
    import wan_worker.preprocess as preprocess

    def no_preprocessing(*_a, **_k):
        raise AssertionError("the Animate warm-up ran the ONNX preprocessing")

    monkeypatch.setattr(preprocess, "preprocess", no_preprocessing)
    monkeypatch.setenv("WARMUP", "animate")
    caplog.set_level(logging.INFO)
    warmup.start(load_settings()).join(30)
    assert any("warm-up animate done" in r.getMessage() for r in caplog.records), caplog.text

    [sent] = fake.prompts
    animate = [n["inputs"] for n in sent["prompt"].values() if n["class_type"] == "WanAnimateToVideo"]
    assert {(a["width"], a["height"]) for a in animate} == {(128, 128)}
    assert "background_video" not in animate[0]  # move mode
    assert {n["inputs"]["steps"] for n in sent["prompt"].values() if n["class_type"] == "KSampler"} == {2}
    videos = {n["_meta"]["title"] for n in sent["prompt"].values() if n["class_type"] == "LoadVideo"}
    assert videos == {"Pose Video", "Face Video"}  # the tiny driving video has no sound: not uploaded
    assert files_under(fake.output_dir) == [] and files_under(fake.input_dir) == []

    first = dict(warmup.job_input("animate"), seed=1)
    result = handler({"id": "job-1", "input": first})
    assert "error" not in result, result
    assert result["warm"] is True and result["frames"] == warmup.ANIMATE_FRAMES


def test_without_warm_up_the_first_job_is_cold_and_the_second_warm(worker_env, fake):
    first = handler(job())
    assert first["warm"] is False and 0 < first["timings_ms"]["model_load"] <= first["timings_ms"]["total"]
    second = handler(job(seed=2))  # the same seed again would be served from ComfyUI's cache: no steps
    assert second["warm"] is True and "model_load" in second["timings_ms"]
    flf = handler(job(end_image=png_b64(color=(10, 10, 10))))
    assert "error" not in flf, flf
    assert flf["warm"] is False  # another graph: warm is per graph


def test_model_load_ends_at_the_first_sampling_step(worker_env, fake):
    """Loading nodes that take long count in model_load; the slow decode after sampling does not."""
    fake.delay_on(0.4, class_type="UNETLoader")
    fake.delay_on(0.4, class_type="VAEDecode")
    result = handler(job())
    assert 400 <= result["timings_ms"]["model_load"] < result["timings_ms"]["execute"] - 300, result["timings_ms"]


def test_a_failed_warm_up_is_logged_and_the_worker_serves_jobs(worker_env, fake, monkeypatch, caplog):
    fake.fail_on(class_type="UNETLoader", exception_type="RuntimeError", exception_message="no GPU", times=1)
    monkeypatch.setenv("WARMUP", "i2v")
    caplog.set_level(logging.INFO)
    thread = warmup.start(load_settings())
    thread.join(30)
    failed = [r.getMessage() for r in caplog.records if "warm-up i2v failed" in r.getMessage()]
    assert failed and "EXECUTION_FAILED" in failed[0], failed
    result = handler(job())
    assert "error" not in result and result["warm"] is False  # the warm-up never finished its graph


def test_a_warm_up_without_comfyui_never_raises(worker_env, fake, monkeypatch, caplog):
    monkeypatch.setenv("COMFY_START_TIMEOUT_S", "0.5")
    fake.kill()
    caplog.set_level(logging.INFO)
    warmup.run(load_settings(), "t2v")  # returns, whatever happened
    assert any("warm-up t2v failed" in r.getMessage() for r in caplog.records)


def test_an_unknown_warm_up_kind_is_logged_not_raised(worker_env, monkeypatch, caplog):
    monkeypatch.setenv("WARMUP", "flux")
    assert warmup.start(load_settings()) is None
    assert any("WARMUP=flux is not a job kind" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("WARMUP", "")
    assert warmup.start(load_settings()) is None


@pytest.mark.parametrize("kind", warmup.KINDS)
def test_every_kind_has_a_valid_smallest_job(kind):
    from wan_worker.request import parse_input

    req = parse_input(warmup.job_input(kind), max_timeout_s=900)
    assert req.spec.model_set.startswith(kind)  # i2v -> i2v-14b, ti2v-5b -> ti2v-5b, ...


@pytest.mark.parametrize("kind", warmup.KINDS)
def test_every_kind_plans_in_a_dry_run(worker_env, fake, kind):
    """The whole planning (volume, image, sound, driving and control videos) accepts each warm-up job."""
    result = handler({"id": f"dry-{kind}", "input": {**warmup.job_input(kind), "dry_run": True}})
    assert "error" not in result, result
    assert result["checks"]["models"]["ok"] is True and (result["width"], result["height"]) == (128, 128)
