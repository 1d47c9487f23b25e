"""End to end through handler() against the stand-in ComfyUI and a test model volume."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import files_under, png_b64
from wan_worker import background
from wan_worker.handler import handler
from wan_worker.models import MANIFEST

PROMPT = "the dragon turns its head slowly"


def job(**fields) -> dict:
    return {"id": "job-1", "input": {"image": png_b64(), "prompt": PROMPT, **fields}}


def prompts_sent(fake) -> list[dict]:
    return [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"]


def saved_files(root: Path) -> list[Path]:
    return files_under(root)


def test_i2v_job_returns_the_mp4_comfyui_saved(worker_env, fake):
    result = handler(job(seed=7))
    assert "error" not in result, result
    [saved] = [o for p in fake.prompts for o in fake.history(forgotten=True)[p["prompt_id"]]["outputs"].values()]
    video = base64.b64decode(result["video"])
    assert video == fake.mp4_bytes
    assert video[4:8] == b"ftyp"
    assert result["mime_type"] == "video/mp4"
    assert result["filename"] == saved["images"][0]["filename"] and result["bytes"] == len(video)
    # the job's files are gone from ComfyUI's folders once delivered
    assert saved_files(fake.output_dir) == [] and saved_files(fake.input_dir) == []
    assert (result["seed"], result["width"], result["height"], result["length"], result["fps"]) \
        == (7, 848, 480, 81, 16.0)
    assert result["duration_s"] == pytest.approx(81 / 16, abs=0.001)
    assert set(result["timings_ms"]) >= {"validate", "image", "upload", "queue", "execute", "deliver", "total"}
    [sent] = prompts_sent(fake)
    assert sent["prompt_id"] == result["prompt_id"]
    graph = sent["prompt"]
    by_class = {}
    for node in graph.values():
        by_class.setdefault(node["class_type"], []).append(node["inputs"])
    assert by_class["CLIPTextEncode"][0]["text"] == PROMPT or by_class["CLIPTextEncode"][1]["text"] == PROMPT
    assert {s["noise_seed"] for s in by_class["KSamplerAdvanced"]} == {7}
    assert by_class["WanImageToVideo"][0]["width"] == 848
    assert by_class["LoadImage"][0]["image"] in fake.uploads


def test_the_job_leaves_no_entry_in_comfyuis_history(worker_env, fake):
    """ComfyUI keeps 10000 prompts with their graphs; a long-lived worker must not fill it."""
    fake.fail_on(class_type="UNETLoader", exception_type="RuntimeError", exception_message="broken")
    failed = handler(job(seed=1))
    fake.reset()
    ok = handler(job(seed=2))
    assert failed["error_code"] == "EXECUTION_FAILED" and "error" not in ok, (failed, ok)
    assert background.wait_idle(5)
    assert fake.history() == {}
    assert set(fake.history(forgotten=True)) == {failed["details"]["prompt_id"], ok["prompt_id"]}
    deletes = [r.json for r in fake.requests if r.method == "POST" and r.path == "/history"]
    assert deletes == [{"delete": [failed["details"]["prompt_id"]]}, {"delete": [ok["prompt_id"]]}]


def test_random_seed_is_returned_and_used(worker_env, fake):
    result = handler(job())
    assert 0 <= result["seed"] < 2**64
    graph = prompts_sent(fake)[0]["prompt"]
    assert {n["inputs"]["noise_seed"] for n in graph.values() if n["class_type"] == "KSamplerAdvanced"} \
        == {result["seed"]}


def test_quality_mode_turns_loras_off(worker_env, fake):
    result = handler(job(fast=False, seed=1))
    assert "error" not in result, result
    graph = prompts_sent(fake)[0]["prompt"]
    loras = [n["inputs"]["strength_model"] for n in graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    steps = {n["inputs"]["steps"] for n in graph.values() if n["class_type"] == "KSamplerAdvanced"}
    assert loras == [0.0, 0.0] and steps == {20}


def test_missing_model_is_reported_before_comfyui_is_touched(worker_env, fake, volume):
    (volume / "vae" / "wan_2.1_vae.safetensors").unlink()
    result = handler(job())
    assert result["error_code"] == "MODELS_MISSING"
    assert "wan_2.1_vae.safetensors" in result["error"]
    assert str(volume / "vae") in json.dumps(result)
    assert "download_models.sh" in result["error"]
    assert fake.requests == []


def test_damaged_model_is_reported(worker_env, fake, volume):
    path = volume / "loras" / MANIFEST[2].name
    path.write_bytes(path.read_bytes()[:20])
    result = handler(job())
    assert result["error_code"] == "MODEL_DAMAGED"
    assert MANIFEST[2].name in result["error"]
    assert fake.requests == []


def test_unreadable_image(worker_env, fake):
    result = handler(job(image=base64.b64encode(b"this is not an image at all").decode()))
    assert result["error_code"] == "IMAGE_UNREADABLE"
    assert "image" in result["error"]
    assert fake.requests == []


def test_invalid_input_names_the_field(worker_env, fake):
    result = handler(job(length=80))
    assert result["error_code"] == "INVALID_INPUT" and "`length`" in result["error"]
    assert fake.requests == []


def test_execution_error_names_node_and_exception(worker_env, fake):
    fake.fail_on(class_type="UNETLoader", exception_type="safetensors_rust.SafetensorError",
                 exception_message="Error while deserializing header: header too large")
    result = handler(job())
    assert result["error_code"] == "EXECUTION_FAILED"
    assert "UNETLoader" in result["error"] and "header too large" in result["error"]
    assert "Traceback" not in result["error"] and "File " not in result["error"]
    assert result["details"]["node_type"] == "UNETLoader"
    assert result["details"]["exception_type"] == "safetensors_rust.SafetensorError"


def test_cuda_out_of_memory_is_its_own_error(worker_env, fake):
    fake.fail_on(class_type="KSamplerAdvanced", exception_type="torch.OutOfMemoryError",
                 exception_message="Allocation on device 0 would exceed allowed memory. (out of memory)")
    result = handler(job())
    assert result["error_code"] == "OUT_OF_MEMORY"
    assert "smaller" in result["error"]


def test_worker_keeps_serving_after_a_failure(worker_env, fake):
    fake.fail_on(class_type="VAEDecode", exception_type="RuntimeError", exception_message="boom")
    assert handler(job())["error_code"] == "EXECUTION_FAILED"
    fake.reset()
    assert "video" in handler(job())


# -- workflow mode ---------------------------------------------------------------------------

def two_image_workflow(prefix: str = "video/wf") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "first.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                      "width": 64, "height": 64, "crop": "disabled"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 9}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 16}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": prefix,
                                                     "format": "mp4", "codec": "h264"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "second.jpg"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "still"}},
    }


def test_workflow_mode_with_two_images(worker_env, fake):
    images = [{"name": "first.png", "image": png_b64()},
              {"name": "second.jpg", "image": "data:image/jpeg;base64," + png_b64(fmt="JPEG")}]
    result = handler({"id": "wf-1", "input": {"workflow": two_image_workflow(), "images": images}})
    assert "error" not in result, result
    assert sorted(fake.uploads) == ["first.png", "second.jpg"]
    by_ext = {Path(i["filename"]).suffix: i for i in result["images"]}
    assert set(by_ext) == {".mp4", ".png"}
    assert all(i["type"] == "base64" for i in result["images"])
    assert base64.b64decode(by_ext[".mp4"]["data"]) == fake.mp4_bytes
    assert base64.b64decode(by_ext[".png"]["data"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved_files(fake.output_dir) == [] and saved_files(fake.input_dir) == []


def test_rejected_workflow_reports_comfyui_node_errors(worker_env, fake):
    graph = two_image_workflow()
    graph["2"]["inputs"]["upscale_method"] = "nope"
    graph["4"]["inputs"]["fps"] = 0
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]
    result = handler({"id": "wf-2", "input": {"workflow": graph, "images": images}})
    assert result["error_code"] == "WORKFLOW_REJECTED"
    problems = {(p["node_id"], p["input"]) for p in result["details"]["node_errors"]}
    assert problems == {("2", "upscale_method"), ("4", "fps")}
    assert "ImageScale" in result["error"] or "CreateVideo" in result["error"]
    # ComfyUI queued the still-valid SaveImage branch; the worker took the prompt back.
    [queued] = prompts_sent(fake)
    deletes = [r.json for r in fake.requests if r.path == "/queue" and r.method == "POST"]
    assert deletes == [{"delete": [queued["prompt_id"]]}]


def test_graph_with_every_output_broken_gets_comfyuis_400(worker_env, fake):
    graph = two_image_workflow()
    graph["2"]["inputs"]["upscale_method"] = "nope"
    graph["7"]["inputs"]["filename_prefix"] = ["99", 0]
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]
    result = handler({"id": "wf-2b", "input": {"workflow": graph, "images": images}})
    assert result["error_code"] == "WORKFLOW_REJECTED"
    assert result["details"]["type"] == "prompt_outputs_failed_validation"
    assert fake.prompts == []


def test_unknown_node_class_is_rejected(worker_env, fake):
    graph = two_image_workflow()
    graph["3"]["class_type"] = "WanVideoSamplerThatDoesNotExist"
    result = handler({"id": "wf-3", "input": {"workflow": graph, "images": [
        {"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]}})
    assert result["error_code"] == "WORKFLOW_REJECTED"
    assert "WanVideoSamplerThatDoesNotExist" in result["error"]


def test_workflow_mode_bad_image_names_its_index(worker_env, fake):
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": "bm9wZQ=="}]
    result = handler({"id": "wf-4", "input": {"workflow": two_image_workflow(), "images": images}})
    assert result["error_code"] == "IMAGE_UNREADABLE" and "images[1].image" in result["error"]


# -- dry run ---------------------------------------------------------------------------------

def test_dry_run_returns_checks_and_workflow_without_comfyui(worker_env, fake):
    result = handler(job(dry_run=True, seed=5, width=640))
    assert result["dry_run"] is True
    assert result["checks"]["image"]["width"] == 96
    assert result["checks"]["models"]["ok"] is True
    assert (result["width"], result["height"], result["seed"]) == (640, 368, 5)
    classes = sorted(n["class_type"] for n in result["workflow"].values())
    assert classes.count("KSamplerAdvanced") == 2 and "SaveVideo" in classes
    assert fake.requests == []


def test_dry_run_reports_missing_models_without_failing(worker_env, fake, volume):
    (volume / "vae" / "wan_2.1_vae.safetensors").unlink()
    result = handler(job(dry_run=True))
    assert "error" not in result
    assert result["checks"]["models"]["ok"] is False
    assert "wan_2.1_vae.safetensors" in json.dumps(result["checks"]["models"])


# -- start-up problems and an absent ComfyUI -------------------------------------------------

def test_broken_workflow_setting_is_an_error_for_every_job(worker_env, fake, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKFLOWS_DIR", str(tmp_path / "nope"))
    from wan_worker import handler as h
    h.worker.cache_clear()
    for _ in range(2):
        result = handler(job())
        assert result["error_code"] == "STARTUP_FAILED" and "WORKFLOWS_DIR" in result["error"]


def test_the_old_workflow_setting_is_not_silently_ignored(worker_env, monkeypatch):
    monkeypatch.setenv("WORKFLOW_PATH", "/somewhere/wan22_i2v.json")
    from wan_worker import handler as h
    h.worker.cache_clear()
    result = handler(job())
    assert result["error_code"] == "STARTUP_FAILED" and "WORKFLOWS_DIR" in result["error"]


def test_bad_setting_value_is_reported(worker_env, monkeypatch):
    monkeypatch.setenv("JOB_TIMEOUT_S", "soon")
    from wan_worker import handler as h
    h.worker.cache_clear()
    result = handler(job())
    assert result["error_code"] == "STARTUP_FAILED" and "JOB_TIMEOUT_S" in result["error"]


def test_comfyui_not_answering_is_bounded(worker_env, monkeypatch, fake):
    monkeypatch.setenv("COMFY_HOST", "127.0.0.1:9")
    monkeypatch.setenv("COMFY_START_TIMEOUT_S", "1")
    from wan_worker import handler as h
    h.worker.cache_clear()
    t0 = time.monotonic()
    result = handler(job())
    assert result["error_code"] == "COMFY_UNAVAILABLE"
    assert "COMFY_START_TIMEOUT_S" in result["error"]
    assert time.monotonic() - t0 < 5


def test_dead_comfyui_process_fails_at_once(worker_env, monkeypatch, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    Path(worker_env["COMFY_PID_FILE"]).write_text(str(proc.pid))
    monkeypatch.setenv("COMFY_HOST", "127.0.0.1:9")
    monkeypatch.setenv("COMFY_START_TIMEOUT_S", "60")
    from wan_worker import handler as h
    h.worker.cache_clear()
    t0 = time.monotonic()
    result = handler(job())
    assert result["error_code"] == "COMFY_UNAVAILABLE" and "exited" in result["error"]
    assert time.monotonic() - t0 < 2


def test_identical_jobs_twice_both_get_their_outputs(worker_env, fake):
    """ComfyUI serves an identical graph from its cache and reports the earlier run's files, which
    the worker already delivered and deleted; each run's own output folder makes the save nodes
    write again."""
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]
    wf_job = {"id": "same", "input": {"workflow": two_image_workflow(), "images": images}}
    i2v_job = job(seed=3)
    for _ in range(2):  # ComfyUI's cache holds the last prompt: the same job back to back
        result = handler(wf_job)
        assert "error" not in result, result
        assert len(result["images"]) == 2
    for _ in range(2):
        result = handler(i2v_job)
        assert base64.b64decode(result["video"]) == fake.mp4_bytes
    cached = [m for _, m in fake.ws_messages if m["type"] == "execution_cached" and m["data"]["nodes"]]
    assert len(cached) == 2  # the second run of each really was served from ComfyUI's cache
    assert saved_files(fake.output_dir) == []
    assert background.wait_idle(5)  # emptied folders are removed right after the result
    assert list(fake.output_dir.iterdir()) == []  # the runs' folders are gone too


def test_outputs_come_over_http_when_comfyuis_folder_is_not_shared(worker_env, fake, monkeypatch, tmp_path):
    monkeypatch.setenv("COMFY_DIR", str(tmp_path / "elsewhere"))
    from wan_worker import handler as h
    h.worker.cache_clear()
    result = handler(job(seed=9))
    assert base64.b64decode(result["video"]) == fake.mp4_bytes
    assert any(r.path == "/view" for r in fake.requests)
