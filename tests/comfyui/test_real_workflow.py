"""Workflow mode (worker-comfyui's contract) and failures, on the real ComfyUI."""
from __future__ import annotations

import base64
import io
import time
from typing import Any

import requests
from PIL import Image

from tests.comfyui.conftest import NEGATIVE, PROMPT, RealComfy
from tests.comfyui.test_real_i2v import IMAGE, i2v
from tests.conftest import png_b64
from tests.test_handler import two_image_workflow
from tests.video import decode, decode_result
from wan_worker import comfy
from wan_worker.handler import handler
from wan_worker.settings import load_settings
from wan_worker.graphs import I2V
from wan_worker.workflow import load_workflow

IMAGES = [{"name": "first.png", "image": png_b64(96, 54, (200, 80, 40))},
          {"name": "second.jpg", "image": "data:image/jpeg;base64," + png_b64(80, 60, (20, 90, 220), "JPEG")}]


def workflow_job(job_id: str, graph: dict[str, Any], images=IMAGES, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"workflow": graph, "images": images, **fields}}


def test_two_images_in_and_a_video_and_an_image_out(real_env, real_comfy: RealComfy):
    files_before = real_comfy.files()
    result = handler(workflow_job("real-wf", two_image_workflow()))
    assert "error" not in result, result
    by_ext = {i["filename"].rsplit(".", 1)[-1]: i for i in result["images"]}
    assert set(by_ext) == {"mp4", "png"} and all(i["type"] == "base64" for i in result["images"])
    video = decode(base64.b64decode(by_ext["mp4"]["data"]))
    assert (len(video.frames), video.width, video.height, video.fps) == (9, 64, 64, 16)
    r, g, b = video.frames[4][32, 32]  # the first image, scaled: its orange survives h264
    assert abs(int(r) - 200) < 25 and abs(int(g) - 80) < 25 and abs(int(b) - 40) < 25
    still = Image.open(io.BytesIO(base64.b64decode(by_ext["png"]["data"])))
    assert still.size == (80, 60) and still.convert("RGB").getpixel((40, 30)) == (20, 90, 220) or \
        max(abs(a - b) for a, b in zip(still.convert("RGB").getpixel((40, 30)), (20, 90, 220))) < 8
    assert real_comfy.files() == files_before


def test_a_graph_comfyui_rejects_names_each_node_and_input(real_env, real_comfy: RealComfy):
    graph = two_image_workflow()
    graph["2"]["inputs"]["upscale_method"] = "nope"
    graph["4"]["inputs"]["fps"] = 0
    result = handler(workflow_job("real-wf-400", graph))
    assert result["error_code"] == "WORKFLOW_REJECTED"
    problems = {(p["node_id"], p["input"], p["type"]) for p in result["details"]["node_errors"]}
    assert problems == {("2", "upscale_method", "value_not_in_list"), ("4", "fps", "value_smaller_than_min")}
    assert "node 2 (ImageScale) input `upscale_method`" in result["error"] or "node 4 (CreateVideo)" in result["error"]


def test_an_unknown_node_class_is_rejected(real_env):
    graph = two_image_workflow()
    graph["3"]["class_type"] = "WanVideoSamplerThatDoesNotExist"
    result = handler(workflow_job("real-wf-class", graph))
    assert result["error_code"] == "WORKFLOW_REJECTED"
    assert "WanVideoSamplerThatDoesNotExist" in result["error"] and result["details"]["type"] == "invalid_prompt"


def test_a_node_failing_while_executing_is_named(real_env):
    """A valid safetensors file that is no diffusion model: ComfyUI accepts the name, then fails."""
    graph = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "not_a_diffusion_model.safetensors",
                                                           "weight_dtype": "default"}},
             "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "never"}}}
    result = handler(workflow_job("real-wf-exec", graph, images=[]))
    assert result["error_code"] == "EXECUTION_FAILED"
    assert result["details"]["node_id"] == "1" and result["details"]["node_type"] == "UNETLoader"
    assert "UNETLoader" in result["error"] and "Traceback" not in result["error"]
    # the worker keeps serving
    assert "error" not in handler(workflow_job("real-wf-after", two_image_workflow()))


def long_i2v_graph(steps: int) -> dict[str, Any]:
    """The bundled graph with a high-noise sampler that runs `steps` steps: long enough to time out."""
    wf = load_workflow(I2V, load_settings().workflows_path)
    graph = wf.one_part()  # the file holds a second segment too
    wf.inputs(graph, "Start Image")["image"] = "start.png"
    wf.inputs(graph, "Positive Prompt")["text"] = PROMPT  # the session's cached encodings
    wf.inputs(graph, "Negative Prompt")["text"] = NEGATIVE
    wf.inputs(graph, "Image To Video").update(width=128, height=128, length=5)
    for role, start, end in (("High Noise Sampler", 0, steps - 1), ("Low Noise Sampler", steps - 1, steps)):
        wf.inputs(graph, role).update(steps=steps, start_at_step=start, end_at_step=end)
    return graph


def test_timeout_interrupts_a_running_job_then_the_next_job_runs(real_env, real_comfy: RealComfy):
    t0 = time.monotonic()
    result = handler(workflow_job("real-timeout", long_i2v_graph(10000),
                                  images=[{"name": "start.png", "image": IMAGE}], timeout_s=15))
    assert result["error_code"] == "TIMEOUT", result
    assert time.monotonic() - t0 < 15 + 10  # the deadline, plus the interrupt's grace
    prompt_id = result["details"]["prompt_id"]

    def stopped() -> bool:
        return requests.get(f"{real_comfy.url}/queue", timeout=10).json()["queue_running"] == []

    deadline = time.monotonic() + 120
    while not stopped():  # a 10000-step sampler runs for hours unless the interrupt really stopped it
        assert time.monotonic() < deadline, "ComfyUI kept running the prompt"
        time.sleep(0.5)
    # The worker deletes the prompt's history entry once the prompt has ended, even when the
    # interrupt landed after the job (it looks again every LATE_POLL_S).
    deadline = time.monotonic() + comfy.FORGET_WAIT_S + 3 * comfy.LATE_POLL_S
    while requests.get(f"{real_comfy.url}/history/{prompt_id}", timeout=10).json().get(prompt_id):
        assert time.monotonic() < deadline, "the timed-out prompt's history entry stayed"
        time.sleep(0.5)
    video = decode_result(handler(i2v("real-after-timeout")))
    assert len(video.frames) == 5 and not video.is_blank()
