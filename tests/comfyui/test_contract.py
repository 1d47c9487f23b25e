"""The stand-in may not drift: the same requests go to tests/fakecomfy and to the real ComfyUI, and
what a client depends on must be the same on both (routes, bodies, websocket order, history).

Each scenario reduces a side's answers to a "client view" (the fields a client reads, values that
do not depend on timing or ids) and compares the two views whole, so a difference shows as a diff.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import websocket

from tests.comfyui.conftest import RealComfy
from tests.comfyui.test_real_workflow import long_i2v_graph
from tests.conftest import png_b64
from tests.fakecomfy import FakeComfy
from tests.test_handler import two_image_workflow
from tests.video import decode

PNG = base64.b64decode(png_b64(96, 54))
JPG = base64.b64decode(png_b64(80, 60, (20, 90, 220), "JPEG"))
# What a client reads from a prompt's messages; others (progress_state, status, ...) it ignores.
CLIENT_TYPES = {"execution_start", "execution_cached", "executing", "executed", "progress",
                "execution_success", "execution_error", "execution_interrupted"}


@dataclass
class Side:
    name: str
    url: str

    def __post_init__(self) -> None:
        self.client_id = str(uuid.uuid4())
        self.ws = websocket.create_connection(f"{self.url.replace('http', 'ws', 1)}/ws?clientId={self.client_id}",
                                              timeout=5)

    def upload(self, name: str, data: bytes, mime: str = "image/png") -> requests.Response:
        return requests.post(f"{self.url}/upload/image", files={"image": (name, data, mime)},
                             data={"overwrite": "true"}, timeout=30)

    def queue(self, graph: dict[str, Any], prompt_id: str | None = None) -> requests.Response:
        body = {"prompt": graph, "client_id": self.client_id}
        if prompt_id:
            body["prompt_id"] = prompt_id
        return requests.post(f"{self.url}/prompt", json=body, timeout=30)

    def messages_until_done(self, prompt_id: str, timeout: float = 600,
                            on_message=None) -> list[dict[str, Any]]:
        """This prompt's JSON messages, up to `executing` with node null."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            raw = self.ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if (msg.get("data") or {}).get("prompt_id") != prompt_id:
                continue
            out.append(msg)
            if on_message:
                on_message(msg)
            if msg["type"] == "executing" and msg["data"].get("node") is None:
                return out
        raise AssertionError(f"{self.name}: prompt {prompt_id} did not end within {timeout} s")

    def history(self, prompt_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/history/{prompt_id}", timeout=10).json()

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def stand_in(real_comfy: RealComfy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeComfy]:
    """The stand-in, its model lists read from the same YAML and volume as the real server's."""
    with FakeComfy(root_dir=tmp_path_factory.mktemp("contract-fake"),
                   extra_model_paths_config=real_comfy.yaml) as fake:
        yield fake


@pytest.fixture(scope="module")
def sides(stand_in: FakeComfy, real_comfy: RealComfy) -> Iterator[tuple[Side, Side]]:
    fake_side, real_side = Side("stand-in", stand_in.url), Side("real", real_comfy.url)
    files_before = real_comfy.files()
    try:
        yield fake_side, real_side
    finally:
        fake_side.close()
        real_side.close()
        for path in real_comfy.files() - files_before:  # leave the session's ComfyUI as it was
            path.unlink(missing_ok=True)


def both(sides: tuple[Side, Side], scenario) -> tuple[Any, Any]:
    return scenario(sides[0]), scenario(sides[1])


def message_view(messages: list[dict[str, Any]]) -> list[tuple]:
    """Type, node and the field names of each message a client reads, in order."""
    view = []
    for m in messages:
        if m["type"] not in CLIENT_TYPES:
            continue
        d = m["data"]
        entry: tuple = (m["type"], d.get("node"), tuple(sorted(d)))
        if m["type"] == "execution_cached":
            entry += (tuple(sorted(d["nodes"])),)
        if m["type"] == "executed":
            entry += (output_view(d["output"]),)
        view.append(entry)
    return view


def run_view(messages: list[dict[str, Any]], graph: dict[str, Any]) -> dict[str, Any]:
    """A run's messages for a graph with several outputs. ComfyUI keeps the outputs in a Python
    set of node ids (execution.py validate_prompt), so the order in which it runs them follows the
    process's string hash seed and changes from one ComfyUI start to the next. What a client can
    rely on: the same messages, each node after its inputs, the run's first and last messages."""
    view = message_view(messages)
    started = [v[1] for v in view if v[0] == "executing" and v[1] is not None]
    upstream_first = all(started.index(link[0]) < started.index(node)
                         for node in started for link in graph[node]["inputs"].values()
                         if isinstance(link, list) and link[0] in started)
    return {"messages": sorted(view, key=repr), "first": view[:2], "last": view[-2:],
            "inputs_run_first": upstream_first}


def output_view(output: dict[str, Any] | None) -> Any:
    if output is None:
        return None
    return {key: [tuple(sorted(item)) if isinstance(item, dict) else item for item in value]
            for key, value in output.items()}


def history_view(entry: dict[str, Any]) -> dict[str, Any]:
    status = entry.get("status") or {}
    return {
        "keys": sorted(entry),
        "status": (status.get("status_str"), status.get("completed")),
        "status_messages": [kind for kind, _ in status.get("messages", [])],
        "outputs": {node: {key: ([{k: v for k, v in f.items() if k != "filename"} | {"ext": Path(f["filename"]).suffix}
                                  for f in files] if key in ("images", "gifs", "videos") else files)
                           for key, files in out.items()}
                    for node, out in (entry.get("outputs") or {}).items()},
        "prompt_shape": [type(x).__name__ for x in entry.get("prompt", [])],
    }


def test_upload_answers_the_same(sides):
    def scenario(side: Side) -> Any:
        first = side.upload("contract.png", PNG)
        again = side.upload("contract.png", PNG)  # overwrite=true: the same name, not contract (1).png
        jpg = side.upload("contract.jpg", JPG, "image/jpeg")
        return [(r.status_code, r.json()) for r in (first, again, jpg)]

    fake, real = both(sides, scenario)
    assert fake == real


def test_a_prompt_runs_with_the_same_answers_messages_history_and_files(sides):
    def scenario(side: Side) -> dict[str, Any]:
        side.upload("first.png", PNG)
        side.upload("second.jpg", JPG, "image/jpeg")
        prompt_id = str(uuid.uuid4())
        graph = two_image_workflow(f"contract/{prompt_id[:8]}")
        resp = side.queue(graph, prompt_id)
        body = resp.json()
        messages = side.messages_until_done(prompt_id)
        entry = side.history(prompt_id)[prompt_id]
        video = next(f for out in entry["outputs"].values() for f in out.get("images", [])
                     if f["filename"].endswith(".mp4"))
        view = requests.get(f"{side.url}/view", params=video, timeout=30)
        missing = requests.get(f"{side.url}/view", params={**video, "filename": "nope.mp4"}, timeout=30)
        frames = decode(view.content)
        # The same graph again: ComfyUI serves it from its cache.
        again_id = str(uuid.uuid4())
        side.queue(graph, again_id)
        again = side.messages_until_done(again_id)
        # The worker deletes each prompt from the history after its job.
        deleted = requests.post(f"{side.url}/history", json={"delete": [again_id]}, timeout=10)
        return {
            "history_delete": (deleted.status_code, side.history(again_id), prompt_id in side.history(prompt_id)),
            "queue": (resp.status_code, sorted(body), body["prompt_id"] == prompt_id, body["node_errors"],
                      isinstance(body["number"], int)),
            "messages": run_view(messages, graph),
            "history": history_view(entry),
            "unknown_history": side.history(str(uuid.uuid4())),
            "view": (view.status_code, view.headers.get("Content-Type"), len(frames.frames),
                     frames.width, frames.height),
            "view_missing": missing.status_code,
            "cached_rerun": run_view(again, graph),
        }

    fake, real = both(sides, scenario)
    assert fake == real


def comparable(value: Any) -> Any:
    """A 400 body without what differs by chance: tracebacks name each side's own files and lines
    (a client shows them, never parses them); `dependent_outputs` and the order of the lines of
    `error.details` follow the order of ComfyUI's set of outputs (see run_view), which changes with
    the process's hash seed (a node keeps the outputs validated before it failed)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "traceback":
                out[k] = "<traceback>"
            elif k == "dependent_outputs":
                out[k] = "<outputs>"
            elif k == "details" and isinstance(v, str) and "\n" in v:
                out[k] = sorted(v.splitlines())
            else:
                out[k] = comparable(v)
        return out
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def rejected(side: Side, graph: dict[str, Any]) -> tuple[int, Any]:
    resp = side.queue(graph)
    body = comparable(resp.json())
    if resp.status_code == 200:  # partly valid: queued anyway, with only the valid outputs
        body |= {"prompt_id": "<id>", "number": type(body["number"]).__name__}
    return resp.status_code, body


def test_rejections_have_the_same_bodies(sides):
    def scenario(side: Side) -> list[tuple[int, Any]]:
        side.upload("first.png", PNG)
        side.upload("second.jpg", JPG, "image/jpeg")
        bad_values = two_image_workflow()
        bad_values["2"]["inputs"]["upscale_method"] = "nope"
        bad_values["4"]["inputs"]["fps"] = 0
        bad_values["7"]["inputs"]["filename_prefix"] = ["99", 0]
        unknown = two_image_workflow()
        unknown["3"]["class_type"] = "NoSuchNode"
        missing_input = two_image_workflow()
        del missing_input["2"]["inputs"]["width"]
        missing_image = two_image_workflow()
        missing_image["1"]["inputs"]["image"] = "not-uploaded.png"
        missing_model = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "nope.safetensors",
                                                                       "weight_dtype": "default"}},
                         "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "x"}}}
        no_output = {"1": {"class_type": "LoadImage", "inputs": {"image": "first.png"}}}
        return [rejected(side, g) for g in (bad_values, unknown, missing_input, missing_image, missing_model,
                                            no_output)]

    fake, real = both(sides, scenario)
    for f, r in zip(fake, real):
        assert f == r


def interrupt_scenario(side: Side, graph: dict[str, Any], running: str, waiting: str) -> dict[str, Any]:
    side.queue(graph, running)
    second = json.loads(json.dumps(graph))
    save = next(k for k, n in second.items() if n["class_type"] == "SaveVideo")
    second[save]["inputs"]["filename_prefix"] = "waiting"
    side.queue(second, waiting)
    pending = [item[1] for item in requests.get(f"{side.url}/queue", timeout=10).json()["queue_pending"]]
    deleted = requests.post(f"{side.url}/queue", json={"delete": [waiting]}, timeout=10)
    after = requests.get(f"{side.url}/queue", timeout=10).json()
    sent: list[int] = []

    def interrupt_on_progress(msg: dict[str, Any]) -> None:
        if msg["type"] == "progress" and not sent:  # the sampler is running: stop it
            sent.append(requests.post(f"{side.url}/interrupt", json={"prompt_id": running}, timeout=10).status_code)

    messages = side.messages_until_done(running, on_message=interrupt_on_progress)
    view = message_view(messages)
    interrupted = next(m["data"] for m in messages if m["type"] == "execution_interrupted")
    first_progress = next(i for i, v in enumerate(view) if v[0] == "progress")
    return {
        "pending_before": waiting in pending,
        "delete": deleted.status_code,
        "interrupt": sent,
        "pending_after": [item[1] for item in after["queue_pending"]],
        "until_sampling": view[:first_progress],
        "ending": [v for v in view[first_progress + 1:] if v[0] != "progress"],
        "interrupted": (sorted(interrupted), interrupted["node_type"]),
        "history": history_view(side.history(running)[running]),
        "deleted_history": side.history(waiting),
    }


def test_interrupt_and_queue_delete_behave_the_same(sides, stand_in: FakeComfy):
    """A sampler really running is interrupted; a prompt waiting behind it is deleted."""

    def scenario(side: Side) -> dict[str, Any]:
        side.upload("start.png", PNG)
        # What is cached when the sampler starts must not depend on the tests before this one: the
        # real server's LRU cache keeps results of earlier prompts, the stand-in's only the last
        # prompt's. A short run of the same graph leaves the same nodes cached on both sides.
        primer = str(uuid.uuid4())
        side.queue(long_i2v_graph(2), primer)
        side.messages_until_done(primer)
        graph = long_i2v_graph(10000)
        running, waiting = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            return interrupt_scenario(side, graph, running, waiting)
        finally:  # whatever happened, never leave a 10000-step sampler running for the next test
            requests.post(f"{side.url}/interrupt", json={"prompt_id": running}, timeout=10)
            requests.post(f"{side.url}/queue", json={"delete": [running, waiting]}, timeout=10)

    stand_in.step_delay = 0.05  # a real sampler at 10000 steps runs for minutes; give the stand-in's time too
    try:
        fake, real = both(sides, scenario)
    finally:
        stand_in.step_delay = 0.0
    assert fake == real
