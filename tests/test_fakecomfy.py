"""The stand-in ComfyUI (tests/fakecomfy) answers like the recordings of a real ComfyUI 0.3.64.

Each replay sends what the recorded client sent and compares with what the real server answered
(copied here from the transcripts: tests must not read the shared recordings at run time).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.fakecomfy import FIXTURES_DIR, FakeComfy, check_prompt, load_object_info, validate_prompt

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = json.loads((FIXTURES_DIR / "template_api_4step_lora.json").read_text())

# ---- recorded data (transcripts of ComfyUI 0.3.64) --------------------------------------------

SUCCESS_PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "peer_test_input.png"}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64,
                                                 "height": 64, "crop": "disabled"}},
    "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 9}},
    "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 16}},
    "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "video/peer_test",
                                                "format": "mp4", "codec": "h264"}},
}
SUCCESS_TYPES = ["status", "feature_flags", "status", "status", "execution_start", "execution_cached",
                 "progress_state", "executing", "progress_state", "progress_state", "executing", "progress_state",
                 "progress_state", "executing", "progress_state", "progress_state", "executing", "progress_state",
                 "progress_state", "executing", "executed", "progress_state", "execution_success", "status",
                 "executing"]
CACHED_RERUN_TYPES = ["status", "status", "status", "execution_start", "execution_cached", "executed",
                      "progress_state", "execution_success", "status", "executing"]
SAVEVIDEO_OUTPUT = {"images": [{"filename": "peer_test_00001_.mp4", "subfolder": "video", "type": "output"}],
                    "animated": [True]}
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}

EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
SAVE_X = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}


def _err(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


# (request body, recorded 400 body without tracebacks)
VALIDATION_MISC = {
    "no_prompt_key": ({}, {"error": _err("no_prompt", "No prompt provided", "No prompt provided"),
                           "node_errors": {}}),
    "no_output_nodes": ({"prompt": {"1": EMPTY}},
                        {"error": _err("prompt_no_outputs", "Prompt has no outputs", ""), "node_errors": {}}),
    "value_out_of_range_and_bad_combo": (
        {"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1,
                                                                  "color": 0}},
                    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nope",
                                                                  "width": 64, "height": 64, "crop": "disabled"}},
                    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}},
        {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
         "node_errors": {
             "1": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                               "details": "width", "extra_info": {
                                   "input_name": "width",
                                   "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
                                   "received_value": 0}}],
                   "dependent_outputs": ["3"], "class_type": "EmptyImage"},
             "2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                               "details": "upscale_method: 'nope' not in ['nearest-exact', 'bilinear', 'area', "
                                          "'bicubic', 'lanczos']",
                               "extra_info": {"input_name": "upscale_method",
                                              "input_config": [["nearest-exact", "bilinear", "area", "bicubic",
                                                                "lanczos"], {}],
                                              "received_value": "nope"}}],
                   "dependent_outputs": ["3"], "class_type": "ImageScale"}}}),
    "missing_required_input": (
        {"prompt": {"1": EMPTY, "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}},
        {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                       "Required input is missing: images"),
         "node_errors": {"3": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
                                           "details": "images", "extra_info": {"input_name": "images"}}],
                               "dependent_outputs": ["3"], "class_type": "SaveImage"}}}),
    "link_to_missing_node": (
        {"prompt": {"3": {"class_type": "SaveImage", "inputs": {"images": ["42", 0], "filename_prefix": "x"}}}},
        {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                       "Exception when validating node: '42'"),
         "node_errors": {"3": {"errors": [{"type": "exception_during_validation",
                                           "message": "Exception when validating node", "details": "'42'",
                                           "extra_info": {"exception_type": "KeyError"}}],
                               "dependent_outputs": ["3"], "class_type": "SaveImage"}}}),
    "missing_input_image_file": (
        {"prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": "no_such_upload.png"}}, "3": SAVE_X}},
        {"error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
         "node_errors": {"1": {"errors": [{"type": "custom_validation_failed",
                                           "message": "Custom validation failed for node",
                                           "details": "image - Invalid image file: no_such_upload.png",
                                           "extra_info": {"input_name": "image"}}],
                               "dependent_outputs": ["3"], "class_type": "LoadImage"}}}),
}
UNKNOWN_CLASS_PROMPT = {"1": EMPTY, "2": {"class_type": "WanVideoSamplerThatDoesNotExist",
                                          "inputs": {"image": ["1", 0]}}, "3": SAVE_X}
UNKNOWN_CLASS_BODY = {"error": {"type": "invalid_prompt", "message": "Cannot execute because node "
                                "WanVideoSamplerThatDoesNotExist does not exist.", "details": "Node ID '#2'",
                                "extra_info": {}}, "node_errors": {}}
HIGH = ["wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"]
LORAS = ["wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
         "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"]
MISSING_MODEL_BODY = {
    "error": _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
    "node_errors": {
        "102": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                            "details": f"lora_name: 'missing_lora.safetensors' not in {LORAS}",
                            "extra_info": {"input_name": "lora_name", "input_config": [LORAS, {}],
                                           "received_value": "missing_lora.safetensors"}}],
                "dependent_outputs": ["108"], "class_type": "LoraLoaderModelOnly"},
        "95": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                           "details": f"unet_name: 'does_not_exist_14B.safetensors' not in {HIGH}",
                           "extra_info": {"input_name": "unet_name", "input_config": [HIGH, {}],
                                          "received_value": "does_not_exist_14B.safetensors"}}],
               "dependent_outputs": ["108"], "class_type": "UNETLoader"}}}
UNET_CHAIN = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": HIGH[0], "weight_dtype": "default"}},
    "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "strength_model": 1.0,
                                                          "lora_name": LORAS[0]}},
    "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5.0}},
    "4": {"class_type": "ModelSave", "inputs": {"model": ["3", 0], "filename_prefix": "diffusion_models/never_written"}},
}
ERROR_TYPES = ["status", "status", "status", "execution_start", "execution_cached", "progress_state", "executing",
               "execution_error", "status", "executing"]
SAFETENSOR_ERROR = {"node_id": "1", "node_type": "UNETLoader", "executed": [],
                    "exception_message": "Error while deserializing header: header too large\n",
                    "exception_type": "safetensors._safetensors_rust.SafetensorError",
                    "current_inputs": {"unet_name": [HIGH[0]], "weight_dtype": ["default"]}}


def _rebatch_prompt(batch: int, color: int) -> dict[str, Any]:
    """The slow graph of the interrupt recording."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": batch,
                                                         "color": color}},
            "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 1}},
            "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "lanczos",
                                                         "width": 4096, "height": 4096, "crop": "disabled"}},
            "4": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "bilinear",
                                                         "width": 64, "height": 64, "crop": "disabled"}},
            "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}}


INTERRUPT_TYPES = [
    "status", "status", "status", "execution_start", "execution_cached", "progress_state", "executing", "status",
    "progress_state", "progress_state", "executing", "progress_state", "progress_state", "executing",
    "execution_interrupted", "status", "executing", "status", "execution_start", "execution_cached",
    "progress_state", "executing", "progress_state", "progress_state", "executing", "progress_state",
    "progress_state", "executing", "execution_interrupted", "status", "executing", "status", "status",
    "execution_start", "execution_cached", "progress_state", "executing", "status", "progress_state",
    "progress_state", "executing", "progress_state", "progress_state", "executing", "status", "status",
    "progress_state", "progress_state", "executing", "progress_state", "progress_state", "executing", "executed",
    "progress_state", "execution_success", "status", "executing"]

# ---- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def comfy(tmp_path: Path):
    with FakeComfy(root_dir=tmp_path / "comfy") as server:
        yield server


class Client:
    """A websocket client like the worker's: every JSON message it gets, in order."""

    def __init__(self, fake: FakeComfy, client_id: str = "client-1", flags: bool = False) -> None:
        self.fake = fake
        self.client_id = client_id
        self.messages: list[dict[str, Any]] = []
        self.ws = websocket.create_connection(f"ws://{fake.host}/ws?clientId={client_id}", timeout=5)
        self.next()  # status with sid
        if flags:
            self.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": False}}))
            self.next()

    def next(self) -> dict[str, Any]:
        while True:
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                message = json.loads(data)
                self.messages.append(message)
                return message
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("closed by server")

    def until(self, event: str, node: Any = "any", prompt_id: str | None = None) -> dict[str, Any]:
        while True:
            message = self.next()
            data = message["data"]
            if message["type"] == event and (node == "any" or data.get("node") == node) \
                    and (prompt_id is None or data.get("prompt_id") == prompt_id):
                return message

    def done(self, prompt_id: str) -> dict[str, Any]:
        return self.until("executing", None, prompt_id)

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def close(self) -> None:
        self.ws.close()


def queue(fake: FakeComfy, prompt: dict[str, Any], client_id: str = "client-1", **extra: Any) -> str:
    resp = requests.post(f"{fake.url}/prompt", json={"prompt": prompt, "client_id": client_id, **extra}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["prompt_id"]


def upload(fake: FakeComfy, name: str, data: bytes = b"\x89PNG\r\n\x1a\n fake", **form: str) -> requests.Response:
    return requests.post(f"{fake.url}/upload/image", files={"image": (name, data, "image/png")}, data=form,
                         timeout=5)


def strip_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [strip_tracebacks(v) for v in value]
    return value


def history(fake: FakeComfy, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- replays ----------------------------------------------------------------------------------


def test_success_replay(comfy: FakeComfy) -> None:
    stats = requests.get(f"{comfy.url}/system_stats", timeout=5)
    assert stats.status_code == 200
    assert stats.json()["system"]["comfyui_version"] == "0.3.64"
    assert set(stats.json()) == {"system", "devices"}
    client = Client(comfy, "01a7c8f7", flags=True)
    assert client.messages[0] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                             "sid": "01a7c8f7"}}
    assert client.messages[1] == {"type": "feature_flags", "data": SERVER_FEATURES}
    assert requests.get(f"{comfy.url}/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}

    up = upload(comfy, "peer_test_input.png", overwrite="true", type="input", subfolder="")
    assert up.json() == {"name": "peer_test_input.png", "subfolder": "", "type": "input"}
    assert up.headers["Content-Length"] == "65"  # the same bytes as the recorded answer
    resp = requests.post(f"{comfy.url}/prompt", json={"prompt": SUCCESS_PROMPT, "client_id": "01a7c8f7"}, timeout=5)
    body = resp.json()
    assert resp.status_code == 200 and list(body) == ["prompt_id", "number", "node_errors"]
    assert body["number"] == 0 and body["node_errors"] == {}
    pid = body["prompt_id"]

    client.done(pid)
    assert client.types() == SUCCESS_TYPES
    executing = [m["data"] for m in client.messages if m["type"] == "executing"]
    assert executing[:-1] == [{"node": n, "display_node": n, "prompt_id": pid} for n in "12345"]
    assert client.messages[-1] == {"type": "executing", "data": {"node": None, "prompt_id": pid}}
    executed = next(m["data"] for m in client.messages if m["type"] == "executed")
    assert executed == {"node": "5", "display_node": "5", "output": SAVEVIDEO_OUTPUT, "prompt_id": pid}
    last_state = [m for m in client.messages if m["type"] == "progress_state"][-1]["data"]["nodes"]["5"]
    assert last_state == {"value": 1.0, "max": 1.0, "state": "finished", "node_id": "5", "prompt_id": pid,
                          "display_node_id": "5", "parent_node_id": None, "real_node_id": "5"}

    entry = history(comfy, pid)[pid]
    graph = copy.deepcopy(SUCCESS_PROMPT)
    graph["4"]["inputs"]["fps"] = 16.0  # ComfyUI stores the coerced FLOAT
    assert entry["prompt"] == [0, pid, graph, {"client_id": "01a7c8f7"}, ["5"]]
    assert entry["outputs"] == {"5": SAVEVIDEO_OUTPUT}
    assert entry["meta"] == {"5": {"node_id": "5", "display_node": "5", "parent_node": None, "real_node_id": "5"}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]

    view = requests.get(f"{comfy.url}/view", params=SAVEVIDEO_OUTPUT["images"][0], timeout=5)
    assert view.status_code == 200
    assert view.headers["Content-Type"] == "video/mp4"
    assert view.headers["Content-Disposition"] == 'filename="peer_test_00001_.mp4"'
    assert view.content == (FIXTURES_DIR / "success.mp4").read_bytes()
    assert view.content[4:8] == b"ftyp"
    assert requests.get(f"{comfy.url}/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 0}}
    assert [r.path for r in comfy.requests][:4] == ["/system_stats", "/ws", "/queue", "/upload/image"]
    assert comfy.uploads == ["peer_test_input.png"]
    assert comfy.prompts[0]["prompt_id"] == pid and comfy.prompts[0]["client_id"] == "01a7c8f7"
    client.close()


def test_identical_prompt_is_served_from_cache(comfy: FakeComfy) -> None:
    upload(comfy, "peer_test_input.png", overwrite="true")
    client = Client(comfy)
    client.done(queue(comfy, SUCCESS_PROMPT))
    client.messages.clear()
    client.messages.append({"type": "status"})  # the recording starts with the connect status
    pid = queue(comfy, SUCCESS_PROMPT)
    client.done(pid)
    assert client.types() == CACHED_RERUN_TYPES
    cached = next(m for m in client.messages if m["type"] == "execution_cached")["data"]
    assert cached["nodes"] == ["1", "2", "3", "4", "5"]
    assert next(m for m in client.messages if m["type"] == "executed")["data"]["output"] == SAVEVIDEO_OUTPUT
    assert history(comfy, pid)[pid]["outputs"] == {"5": SAVEVIDEO_OUTPUT}
    assert sorted(p.name for p in (comfy.output_dir / "video").iterdir()) == ["peer_test_00001_.mp4"]

    changed = copy.deepcopy(SUCCESS_PROMPT)
    changed["3"]["inputs"]["amount"] = 5  # nodes 1 and 2 still cached, a new file is written
    client.messages.clear()
    pid = queue(comfy, changed)
    client.done(pid)
    assert next(m for m in client.messages if m["type"] == "execution_cached")["data"]["nodes"] == ["1", "2"]
    assert [m["data"]["node"] for m in client.messages if m["type"] == "executing"] == ["3", "4", "5", None]
    assert history(comfy, pid)[pid]["outputs"]["5"]["images"][0]["filename"] == "peer_test_00002_.mp4"
    client.close()


@pytest.mark.parametrize("case", list(VALIDATION_MISC))
def test_validation_misc_replay(comfy: FakeComfy, case: str) -> None:
    Path(comfy.input_dir, "peer_test_input.png").write_bytes(b"x")
    request, expected = VALIDATION_MISC[case]
    resp = requests.post(f"{comfy.url}/prompt", json={**request, "client_id": "c"}, timeout=5)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    got = resp.json()
    assert json.dumps(strip_tracebacks(got)) == json.dumps(expected)  # same keys, order and values
    if case == "link_to_missing_node":
        assert isinstance(got["node_errors"]["3"]["errors"][0]["extra_info"]["traceback"], list)
    assert comfy.prompts == []  # nothing queued


def test_unknown_class_replay(comfy: FakeComfy) -> None:
    resp = requests.post(f"{comfy.url}/prompt", json={"prompt": UNKNOWN_CLASS_PROMPT, "client_id": "c"}, timeout=5)
    assert resp.status_code == 400
    assert resp.text == json.dumps(UNKNOWN_CLASS_BODY)  # byte for byte
    assert resp.headers["Content-Length"] == "191"


def test_missing_model_replay(comfy: FakeComfy) -> None:
    upload(comfy, "peer_wan_input.png", overwrite="true")
    graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in TEMPLATE.items()}
    graph["97"]["inputs"]["image"] = "peer_wan_input.png"
    graph["95"]["inputs"]["unet_name"] = "does_not_exist_14B.safetensors"
    graph["102"]["inputs"]["lora_name"] = "missing_lora.safetensors"
    resp = requests.post(f"{comfy.url}/prompt", json={"prompt": graph, "client_id": "c"}, timeout=5)
    assert resp.status_code == 400
    assert resp.text == json.dumps(MISSING_MODEL_BODY)
    assert requests.get(f"{comfy.url}/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}


def test_execution_error_replay(comfy: FakeComfy) -> None:
    comfy.fail_on("UNETLoader", exception_type="safetensors._safetensors_rust.SafetensorError",
                  exception_message="Error while deserializing header: header too large")
    client = Client(comfy)
    pid = queue(comfy, UNET_CHAIN)
    client.done(pid)
    assert client.types() == ERROR_TYPES
    error = next(m for m in client.messages if m["type"] == "execution_error")["data"]
    assert list(error) == ["prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                           "traceback", "current_inputs", "current_outputs", "timestamp"]
    assert {k: error[k] for k in SAFETENSOR_ERROR} == SAFETENSOR_ERROR
    assert error["prompt_id"] == pid and sorted(error["current_outputs"]) == ["1", "2", "3", "4"]
    assert error["traceback"] and all(isinstance(line, str) for line in error["traceback"])

    entry = history(comfy, pid)[pid]
    assert entry["outputs"] == {} and entry["meta"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_error"]
    assert entry["status"]["messages"][2][1] == error
    client.close()


def test_execution_error_on_the_wan_graph_first_node_and_oom_tips(comfy: FakeComfy) -> None:
    upload(comfy, "input-18.jpg")
    comfy.fail_on(node_id="90", exception_type="torch.OutOfMemoryError", exception_message="Allocation failed")
    client = Client(comfy)
    pid = queue(comfy, TEMPLATE)
    client.done(pid)
    assert client.types() == ERROR_TYPES
    error = next(m for m in client.messages if m["type"] == "execution_error")["data"]
    assert error["node_id"] == "90" and error["node_type"] == "VAELoader"  # ComfyUI starts with node 90 too
    assert error["exception_message"].startswith("Allocation failed\nThis error means you ran out of memory")
    assert len(error["current_outputs"]) == len(TEMPLATE)


def test_interrupt_replay(comfy: FakeComfy) -> None:
    # Timings of the recording: B and C are queued while node 1 runs; node 3 of A and B hangs.
    comfy.delay_on(0.15, node_id="1")
    comfy.delay_on(0.15, node_id="3")
    comfy.stall_on("ImageScale", node_id="3", times=2)
    client = Client(comfy)
    pid_a = queue(comfy, _rebatch_prompt(30, 444460))
    client.until("executing", "1", pid_a)
    pid_b = queue(comfy, _rebatch_prompt(2, 444461))
    client.until("executing", "3", pid_a)
    running = requests.get(f"{comfy.url}/queue", timeout=5).json()
    assert [i[1] for i in running["queue_running"]] == [pid_a]
    assert [i[1] for i in running["queue_pending"]] == [pid_b]

    assert requests.post(f"{comfy.url}/interrupt", json={"prompt_id": pid_b}, timeout=5).status_code == 200
    time.sleep(0.2)  # naming a pending prompt does nothing
    assert requests.get(f"{comfy.url}/queue", timeout=5).json()["queue_running"][0][1] == pid_a
    resp = requests.post(f"{comfy.url}/interrupt", timeout=5)  # global, no body
    assert resp.status_code == 200 and resp.content == b""
    interrupted = client.until("execution_interrupted")["data"]
    assert {k: v for k, v in interrupted.items() if k != "timestamp"} == {
        "prompt_id": pid_a, "node_id": "3", "node_type": "ImageScale", "executed": ["1", "2"]}
    client.done(pid_a)
    entry = history(comfy, pid_a)[pid_a]
    assert entry["outputs"] == {} and entry["status"]["status_str"] == "error"
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_interrupted"]

    client.until("executing", "3", pid_b)
    requests.post(f"{comfy.url}/interrupt", json={"prompt_id": pid_b}, timeout=5)
    client.done(pid_b)
    assert history(comfy, pid_b)[pid_b]["status"]["messages"][2][1]["node_id"] == "3"

    pid_d = queue(comfy, _rebatch_prompt(3, 444462))
    client.until("executing", "1", pid_d)
    pid_c = queue(comfy, _rebatch_prompt(2, 444463))
    client.until("executing", "3", pid_d)
    assert requests.post(f"{comfy.url}/queue", json={"delete": [pid_c]}, timeout=5).status_code == 200
    assert requests.get(f"{comfy.url}/queue", timeout=5).json()["queue_pending"] == []
    client.done(pid_d)
    assert client.types() == INTERRUPT_TYPES
    preview = next(m for m in client.messages if m["type"] == "executed")["data"]["output"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    assert history(comfy, pid_c) == {}
    client.close()


def test_progress_messages_for_the_wan_graph(comfy: FakeComfy) -> None:
    upload(comfy, "input-18.jpg")
    client = Client(comfy)
    pid = queue(comfy, TEMPLATE)
    client.done(pid)
    order = [m["data"]["node"] for m in client.messages if m["type"] == "executing"]
    assert order[0] == "90" and order[-2:] == ["108", None]
    assert sorted(order[:-1]) == sorted(TEMPLATE)
    progress = [m for m in client.messages if m["type"] == "progress"]
    # 4 steps split 0-2 / 2-4 between the two KSamplerAdvanced nodes: 2 steps each.
    assert [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in progress] == [
        ("86", 1, 2), ("86", 2, 2), ("85", 1, 2), ("85", 2, 2)]
    assert all(m["data"]["prompt_id"] == pid for m in progress)
    for i, message in enumerate(client.messages):
        if message["type"] == "progress":  # as recorded: each step's progress_state comes first
            state = client.messages[i - 1]
            assert state["type"] == "progress_state"
            assert state["data"]["nodes"][message["data"]["node"]]["value"] == message["data"]["value"]
    saved = history(comfy, pid)[pid]["outputs"]["108"]["images"][0]
    assert saved == {"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}
    client.close()


def test_validate_prompt_accepts_the_recorded_template(tmp_path: Path) -> None:
    info = load_object_info()
    ok, body = validate_prompt(TEMPLATE, info, tmp_path)
    assert not ok and body["node_errors"]["97"]["errors"][0]["details"] == "image - Invalid image file: input-18.jpg"
    (tmp_path / "input-18.jpg").write_bytes(b"jpeg")
    assert validate_prompt(TEMPLATE, info, tmp_path) == (True, None)
    result = check_prompt(TEMPLATE, info, tmp_path)
    assert result.outputs == ["108"] and result.prompt["94"]["inputs"]["fps"] == 16.0
    assert TEMPLATE["94"]["inputs"]["fps"] == 16  # the caller's graph is left alone


def test_validate_prompt_other_error_shapes(tmp_path: Path) -> None:
    info = load_object_info()
    (tmp_path / "in.png").write_bytes(b"x")
    graph = copy.deepcopy(UNET_CHAIN)
    graph["2"]["inputs"]["model"] = ["9", 0]
    graph["9"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}
    graph["3"]["inputs"]["shift"] = "abc"
    graph["5"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                         "type": "wan", "device": "gpu"}}
    graph["6"] = {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "v", "format": "webm",
                                                        "codec": "auto"}}
    graph["7"] = {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 500}}
    graph["8"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}, "_meta": {"title": "ignored"}}
    ok, body = validate_prompt(graph, info, tmp_path)
    assert not ok
    errors = {node: [(e["type"], e["details"]) for e in v["errors"]] for node, v in body["node_errors"].items()}
    assert errors["2"] == [("return_type_mismatch", "model, received_type(VAE) mismatch input_type(MODEL)")]
    assert errors["3"] == [("invalid_input_type", "shift, abc, could not convert string to float: 'abc'")]
    assert errors["7"] == [("value_bigger_than_max", "fps")]
    assert body["node_errors"]["7"]["errors"][0]["message"] == "Value 500.0 bigger than max of 120.0"
    assert errors["6"] == [("value_not_in_list", "format: 'webm' not in ['auto', 'mp4']")]  # the COMBO form
    assert "5" not in errors  # CLIPLoader is not an output and nothing uses it
    assert body["node_errors"]["2"]["dependent_outputs"] == ["4", "6"]  # ComfyUI's quirk: all failing outputs

    (tmp_path / "input-18.jpg").write_bytes(b"jpeg")
    wan = copy.deepcopy(TEMPLATE)
    wan["84"]["inputs"]["device"] = "gpu"  # an optional input is checked when present
    ok, body = validate_prompt(wan, info, tmp_path)
    assert body["node_errors"]["84"]["errors"] == [{
        "type": "value_not_in_list", "message": "Value not in list", "details": "device: 'gpu' not in ['default', 'cpu']",
        "extra_info": {"input_name": "device", "input_config": [["default", "cpu"], {"advanced": True}],
                       "received_value": "gpu"}}]
    assert body["node_errors"]["84"]["dependent_outputs"] == ["108"]
    graph = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                          "type": "wan", "device": "gpu"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["1", 0]}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
             "4": EMPTY}
    graph["3"]["inputs"]["images"] = ["2", 5]
    ok, body = validate_prompt(graph, info, tmp_path)
    assert body["error"]["details"] == "Exception when validating node: tuple index out of range"


def test_partly_valid_prompt_is_queued_with_node_errors(comfy: FakeComfy) -> None:
    """ComfyUI runs the outputs that pass and answers 200 with node_errors for the others."""
    upload(comfy, "peer_test_input.png")
    graph = copy.deepcopy(SUCCESS_PROMPT)
    graph["4"]["inputs"]["fps"] = 0
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "still"}}
    client = Client(comfy)
    resp = requests.post(f"{comfy.url}/prompt", json={"prompt": graph, "client_id": "client-1"}, timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert body["node_errors"]["4"]["errors"][0]["type"] == "value_smaller_than_min"
    assert body["node_errors"]["4"]["dependent_outputs"] == ["5"]
    client.done(body["prompt_id"])
    entry = history(comfy, body["prompt_id"])[body["prompt_id"]]
    assert entry["prompt"][4] == ["6"] and list(entry["outputs"]) == ["6"]
    assert entry["status"]["status_str"] == "success"


def test_sampler_previews_are_binary_frames(tmp_path: Path) -> None:
    with FakeComfy(root_dir=tmp_path, previews=True) as fake:
        upload(fake, "input-18.jpg")
        client = Client(fake, flags=True)  # supports_preview_metadata false: old format, type 1 + JPEG
        client.ws.send("not json at all")  # unknown or broken messages are ignored
        client.ws.send(json.dumps({"type": "whatever", "data": {}}))
        pid = queue(fake, TEMPLATE)
        frames = []
        while True:
            opcode, data = client.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_BINARY:
                frames.append(data)
            elif json.loads(data)["type"] == "executing" and json.loads(data)["data"] == {"node": None,
                                                                                       "prompt_id": pid}:
                break
        assert len(frames) == 4
        assert all(f[:8] == b"\0\0\0\x01\0\0\0\x01" and f[8:10] == b"\xff\xd8" for f in frames)


def test_messages_go_only_to_the_prompts_client(comfy: FakeComfy) -> None:
    upload(comfy, "peer_test_input.png")
    mine, other = Client(comfy, "mine"), Client(comfy, "other")
    pid = queue(comfy, SUCCESS_PROMPT, "mine")
    mine.done(pid)
    other.until("status")  # the broadcasts still reach everyone
    time.sleep(0.1)
    other.ws.settimeout(0.2)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            other.next()
    assert set(other.types()) == {"status"}
    assert "execution_success" in mine.types()
    mine.close()
    other.close()


def test_reconnect_mid_job_gets_current_node_and_drops(comfy: FakeComfy) -> None:
    upload(comfy, "peer_test_input.png")
    comfy.stall_on("CreateVideo")
    client = Client(comfy, "w")
    pid = queue(comfy, SUCCESS_PROMPT, "w")
    client.until("executing", "4", pid)
    client.close()
    time.sleep(0.1)  # let the server forget the old socket before the same client id comes back
    again = Client(comfy, "w")  # ComfyUI tells a reconnecting client which node runs
    assert again.next() == {"type": "executing", "data": {"node": "4"}}
    comfy.reset()  # the stalled node carries on
    comfy.delay_on(0.5, "SaveVideo")  # time to reconnect before the job ends
    comfy.drop_websocket(times=1)
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        again.done(pid)
    third = Client(comfy, "w")
    assert third.next() == {"type": "executing", "data": {"node": "5"}}
    third.done(pid)
    assert history(comfy, pid)[pid]["status"]["status_str"] == "success"
    assert comfy.ws_connections == ["w", "w", "w"]


def test_drop_websocket_forever_leaves_only_history(comfy: FakeComfy) -> None:
    upload(comfy, "peer_test_input.png")
    comfy.drop_websocket(times=None, abrupt=True)
    client = Client(comfy, "w")
    pid = queue(comfy, SUCCESS_PROMPT, "w")
    with pytest.raises((ConnectionError, websocket.WebSocketException, OSError)):
        client.done(pid)
    assert comfy.wait_idle(5)
    assert history(comfy, pid)[pid]["status"]["status_str"] == "success"


def test_http_errors_and_slow_responses(comfy: FakeComfy) -> None:
    comfy.http_errors(500, count=2)
    got = [requests.get(f"{comfy.url}/system_stats", timeout=5) for _ in range(3)]
    assert [r.status_code for r in got] == [500, 500, 200]
    assert got[0].text == "500: Internal Server Error"
    comfy.http_errors(503, paths=["/view"])
    assert requests.get(f"{comfy.url}/view", params={"filename": "x.mp4"}, timeout=5).status_code == 503
    assert requests.get(f"{comfy.url}/queue", timeout=5).status_code == 200
    comfy.slow_responses(0.3, count=1, paths=["/system_stats"])
    start = time.monotonic()
    assert requests.get(f"{comfy.url}/system_stats", timeout=5).status_code == 200
    assert time.monotonic() - start >= 0.3
    comfy.reset()
    assert requests.get(f"{comfy.url}/view", params={"filename": "x.mp4"}, timeout=5).status_code == 404
    assert [r.status for r in comfy.requests][:3] == [500, 500, 200]


def test_boot_delay_refuses_then_answers(tmp_path: Path) -> None:
    fake = FakeComfy(root_dir=tmp_path).start(boot_delay=0.4)
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{fake.url}/system_stats", timeout=2)
        deadline = time.monotonic() + 5
        while True:
            try:
                assert requests.get(f"{fake.url}/system_stats", timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        fake.stop()


def test_die_mid_job_then_restart(comfy: FakeComfy) -> None:
    upload(comfy, "peer_test_input.png")
    comfy.die_on("CreateVideo")
    client = Client(comfy, "w")
    pid = queue(comfy, SUCCESS_PROMPT, "w")
    with pytest.raises((ConnectionError, websocket.WebSocketException, OSError)):
        client.done(pid)
    deadline = time.monotonic() + 5
    while comfy.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not comfy.alive
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{comfy.url}/system_stats", timeout=2)
    port = comfy.port
    comfy.start()  # a restarted ComfyUI: same port, empty history
    assert comfy.port == port
    assert history(comfy, pid) == {}
    assert requests.get(f"{comfy.url}/system_stats", timeout=5).status_code == 200


def test_upload_renames_like_comfyui(comfy: FakeComfy) -> None:
    assert upload(comfy, "a.png", b"one").json()["name"] == "a.png"
    assert upload(comfy, "a.png", b"one").json()["name"] == "a.png"  # same bytes: same file
    assert upload(comfy, "a.png", b"two").json()["name"] == "a (1).png"
    assert upload(comfy, "a.png", b"three", overwrite="true").json()["name"] == "a.png"
    assert (comfy.input_dir / "a.png").read_bytes() == b"three"
    sub = upload(comfy, "b.png", b"x", subfolder="jobs")
    assert sub.json() == {"name": "b.png", "subfolder": "jobs", "type": "input"}
    assert upload(comfy, "c.png", b"x", subfolder="../..").status_code == 400
    listed = requests.get(f"{comfy.url}/object_info/LoadImage", timeout=5).json()
    assert listed["LoadImage"]["input"]["required"]["image"][0] == ["a (1).png", "a.png"]
    assert comfy.requests[0].files == {"image": "a.png"}


def test_view_refuses_traversal_and_answers_404(comfy: FakeComfy) -> None:
    (comfy.output_dir / "ok.png").write_bytes(b"png")
    view = f"{comfy.url}/view"
    assert requests.get(view, params={"filename": "ok.png"}, timeout=5).content == b"png"
    assert requests.get(view, params={"filename": "../secret"}, timeout=5).status_code == 400
    assert requests.get(view, params={"filename": "ok.png", "subfolder": "../.."}, timeout=5).status_code == 403
    assert requests.get(view, params={"filename": "ok.png", "type": "nope"}, timeout=5).status_code == 400
    missing = requests.get(view, params={"filename": "nope.mp4", "subfolder": "video", "type": "output"}, timeout=5)
    assert missing.status_code == 404 and missing.content == b""
    assert "Content-Type" not in missing.headers
    assert requests.get(f"{comfy.url}/history/00000000-0000-0000-0000-000000000000", timeout=5).json() == {}


def test_misc_api(comfy: FakeComfy) -> None:
    client = Client(comfy, "m")
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                          "color": 282465}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "peer_misc"}}}
    chosen = "4d87e1f0-4e49-45ad-94b3-685cf30f37c5"
    resp = requests.post(f"{comfy.url}/api/prompt", json={"prompt": graph, "client_id": "m", "prompt_id": chosen},
                         timeout=5)
    assert resp.json() == {"prompt_id": chosen, "number": 0, "node_errors": {}}
    client.done(chosen)
    out = history(comfy, chosen)[chosen]["outputs"]["2"]
    assert out == {"images": [{"filename": "peer_misc_00001_.png", "subfolder": "", "type": "output"}]}
    assert (comfy.output_dir / "peer_misc_00001_.png").read_bytes()[:4] == b"\x89PNG"
    assert list(requests.get(f"{comfy.url}/history", params={"max_items": 1}, timeout=5).json()) == [chosen]
    assert requests.get(f"{comfy.url}/models/loras", timeout=5).json() == LORAS
    assert requests.get(f"{comfy.url}/models/nonexistent_folder", timeout=5).status_code == 404
    assert "diffusion_models" in requests.get(f"{comfy.url}/models", timeout=5).json()
    assert requests.get(f"{comfy.url}/features", timeout=5).json() == SERVER_FEATURES
    unet = requests.get(f"{comfy.url}/object_info/UNETLoader", timeout=5).json()
    assert unet == {"UNETLoader": load_object_info()["UNETLoader"]}
    assert requests.get(f"{comfy.url}/object_info/Nope", timeout=5).json() == {}
    assert requests.post(f"{comfy.url}/history", json={"delete": [chosen]}, timeout=5).status_code == 200
    assert history(comfy, chosen) == {}
    comfy.stall_on("SaveImage")
    first = queue(comfy, graph, "m")
    second = queue(comfy, {**graph, "1": {**graph["1"], "inputs": {**graph["1"]["inputs"], "color": 1}}}, "m")
    assert requests.post(f"{comfy.url}/queue", json={"clear": True}, timeout=5).status_code == 200
    assert comfy.queue()["queue_pending"] == []
    requests.post(f"{comfy.url}/interrupt", json={"prompt_id": first}, timeout=5)
    client.done(first)
    assert history(comfy, second) == {}
    client.close()


def test_model_lists_follow_extra_model_paths(tmp_path: Path) -> None:
    models = tmp_path / "volume"
    (models / "loras").mkdir(parents=True)
    (models / "loras" / "mine.safetensors").write_bytes(b"x")
    (models / "loras" / "notes.txt").write_text("not a model")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"vol:\n  base_path: {models}\n  loras: loras\n  unet: diffusion_models\n")
    with FakeComfy(root_dir=tmp_path / "comfy", extra_model_paths_config=config) as fake:
        info = requests.get(f"{fake.url}/object_info", timeout=5).json()
        assert info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0] == ["mine.safetensors"]
        assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["pixel_space"]
        assert requests.get(f"{fake.url}/models/loras", timeout=5).json() == ["mine.safetensors"]
        resp = requests.post(f"{fake.url}/prompt", json={"prompt": UNET_CHAIN}, timeout=5)
        assert resp.status_code == 400
        assert {e["errors"][0]["extra_info"]["input_name"] for e in resp.json()["node_errors"].values()} == {
            "unet_name", "lora_name"}


def test_object_info_fixture_is_reproducible() -> None:
    sys.path.insert(0, str(FIXTURES_DIR))
    try:
        import make_object_info
    finally:
        sys.path.remove(str(FIXTURES_DIR))
    fixture = load_object_info()
    assert make_object_info.trim(fixture, make_object_info.CLASSES) == fixture
    for name in ("CLIPLoader", "VAELoader", "LoadImage", "UNETLoader", "LoraLoaderModelOnly", "ModelSamplingSD3",
                 "CLIPTextEncode", "WanImageToVideo", "KSamplerAdvanced", "VAEDecode", "CreateVideo", "SaveVideo",
                 "SaveImage", "PreviewImage", "EmptyImage", "ImageScale", "RepeatImageBatch", "RebatchImages",
                 "ModelSave"):
        assert fixture[name]["name"] == name


def test_main_py_runs_like_comfyui(tmp_path: Path) -> None:
    comfy_dir = tmp_path / "ComfyUI"
    comfy_dir.mkdir()
    shutil.copy(REPO / "tests" / "fakecomfy" / "main.py", comfy_dir / "main.py")
    config = tmp_path / "extra.yaml"
    config.write_text(f"v:\n  base_path: {tmp_path}\n  loras: loras\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--extra-model-paths-config",
         str(config), "--disable-auto-launch", "--disable-metadata", "--disable-api-nodes", "--cpu"],
        cwd=comfy_dir, env={**os.environ, "FAKECOMFY_REPO": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "To see the GUI go to" in line:
                break
        assert f"http://127.0.0.1:{port}" in line
        stats = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=5).json()
        assert "--extra-model-paths-config" in stats["system"]["argv"]
        assert requests.get(f"http://127.0.0.1:{port}/models/loras", timeout=5).json() == []
        upload_resp = requests.post(f"http://127.0.0.1:{port}/upload/image", files={"image": ("i.png", b"x")},
                                    timeout=5)
        assert upload_resp.status_code == 200 and (comfy_dir / "input" / "i.png").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
