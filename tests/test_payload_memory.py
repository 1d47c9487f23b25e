"""A large input or output is held in as few copies as the job needs, and sent without extra ones
(`python -m bench --profile` measures the same on 10 MB; docs/performance.md)."""
from __future__ import annotations

import base64
import http.client
import struct
import tracemalloc

import requests

from tests.conftest import FIXTURES, png_b64
from wan_worker import background, delivery
from wan_worker.comfy import ComfyClient, multipart
from wan_worker.handler import handler
from wan_worker.settings import load_settings

MB = 1_000_000
SIZE = 4 * MB


def big_mp4(size: int = SIZE) -> bytes:
    """The fixture MP4 padded with a `free` box to `size` bytes (still a valid MP4)."""
    base = (FIXTURES / "success.mp4").read_bytes()
    pad = size - len(base)
    return base + struct.pack(">I", pad) + b"free" + b"\x5a" * (pad - 8)


def video_job(text: str, name: str = "clip.mp4") -> dict:
    graph = {"1": {"class_type": "LoadVideo", "inputs": {"file": name}},
             "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "vid",
                                                         "format": "auto", "codec": "auto"}}}
    return {"id": "big-1", "input": {"workflow": graph, "images": [{"name": name, "image": text}],
                                     "output": "base64"}}


def test_the_decoded_input_is_freed_before_delivery(worker_env, fake, monkeypatch):
    """Delivery is where a base64 job's memory peaks; the input's decoded bytes must be gone by then."""
    text = base64.b64encode(big_mp4()).decode("ascii")
    at_delivery: list[int] = []
    real = delivery.deliver_files

    def spy(*args, **kwargs):
        at_delivery.append(tracemalloc.get_traced_memory()[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(delivery, "deliver_files", spy)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = handler(video_job(text))
    finally:
        tracemalloc.stop()
    assert "error" not in result, result
    assert base64.b64decode(result["images"][0]["data"]) == fake.mp4_bytes
    assert at_delivery[0] - start < SIZE // 2  # was SIZE more: the plan kept the upload's bytes


def test_the_upload_sends_the_input_bytes_without_copying_them(worker_env, fake, monkeypatch):
    data = big_mp4()
    sent: list[bytes] = []
    real_send = http.client.HTTPConnection.send

    def spy(self, chunk):
        sent.append(chunk)
        return real_send(self, chunk)

    monkeypatch.setattr(http.client.HTTPConnection, "send", spy)
    name = ComfyClient(load_settings()).upload_image("my clip (1).mp4", data, "video/mp4")
    assert name == "my clip (1).mp4"
    assert any(chunk is data for chunk in sent)  # the very object, not a body built around a copy
    assert (fake.input_dir / name).read_bytes() == data
    [record] = [r for r in fake.requests if r.path == "/upload/image"]
    assert record.files == {"image": name} and record.form == {"overwrite": "true"}


def test_the_multipart_body_is_the_one_requests_builds():
    data = b"\x00\xffDATA\r\n--not-a-boundary"
    body, content_type = multipart({"overwrite": "true"}, "image", 'odd "name".png', data, "image/png")
    ours = b"".join(body)
    assert len(body) == len(ours)
    theirs = requests.Request("POST", "http://127.0.0.1/upload/image", data={"overwrite": "true"},
                              files={"image": ('odd "name".png', data, "image/png")}).prepare()
    boundary = content_type.split("boundary=")[1].encode()
    their_boundary = theirs.headers["Content-Type"].split("boundary=")[1].encode()
    assert ours.replace(boundary, b"B") == theirs.body.replace(their_boundary, b"B")


def test_a_proxy_in_the_environment_is_not_used_for_comfyui_requests(worker_env, fake, monkeypatch):
    """HTTP_PROXY may be set for downloads; ComfyUI is local and its HTTP API is reached directly
    (the session does not read the environment: also ~0.1 ms a request saved)."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    client = ComfyClient(load_settings())
    client.wait_until_ready()
    assert client.upload_image("p.mp4", big_mp4(100_000), "video/mp4") == "p.mp4"
    assert client.history("no-such-prompt") == {}
    result = handler({"id": "proxy", "input": {"image": png_b64(), "prompt": "waves roll in"}})
    assert "error" not in result, result  # the websocket too
    assert background.wait_idle(10)  # and the background thread's history delete after the job
    assert fake.history() == {} and result["prompt_id"] in fake.history(forgotten=True)
