"""Delivery through handler(): S3 URLs from a real S3-compatible server, size-aware base64."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import requests

from tests.conftest import files_under, png_b64
from tests.s3server import S3Server, closed_port, s3_server
from tests.test_handler import two_image_workflow
from wan_worker import handler as handler_module
from wan_worker.handler import handler


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def bucket_env(worker_env, s3, monkeypatch):
    env = {"BUCKET_ENDPOINT_URL": s3.endpoint, "BUCKET_ACCESS_KEY_ID": s3.access_key,
           "BUCKET_SECRET_ACCESS_KEY": s3.secret_key, "BUCKET_NAME": s3.bucket}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    handler_module.worker.cache_clear()
    return env


def job(**fields) -> dict:
    return {"id": "deliver-1", "input": {"image": png_b64(), "prompt": "a kite rises", **fields}}


def leftovers(fake) -> list[Path]:
    return files_under(fake.input_dir, fake.output_dir)


def test_auto_with_a_bucket_returns_a_working_url(bucket_env, fake):
    result = handler(job())
    assert "error" not in result, result
    assert "video" not in result and result["video_url"].startswith(bucket_env["BUCKET_ENDPOINT_URL"])
    assert "deliver-1" in result["video_url"]
    got = requests.get(result["video_url"], timeout=10)
    assert got.status_code == 200 and got.content == fake.mp4_bytes
    assert got.headers["Content-Type"] == "video/mp4"
    assert result["bytes"] == len(fake.mp4_bytes) and result["mime_type"] == "video/mp4"
    assert leftovers(fake) == []


def test_base64_can_still_be_asked_for_with_a_bucket(bucket_env, fake):
    result = handler(job(output="base64"))
    assert base64.b64decode(result["video"]) == fake.mp4_bytes and "video_url" not in result


def test_large_output_goes_to_s3_in_auto_mode(bucket_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_INLINE_OUTPUT_MB", "1")
    handler_module.worker.cache_clear()
    fake.mp4_bytes = b"\0\0\0\x18ftypmp42" + os.urandom(3 * 1000 * 1000)
    result = handler(job())
    assert requests.get(result["video_url"], timeout=10).content == fake.mp4_bytes
    too_big = handler(job(output="base64"))
    assert too_big["error_code"] == "OUTPUT_TOO_LARGE" and "3.0 MB" in too_big["error"]
    assert "`output`" in too_big["error"] or "output" in too_big["error"]


def test_large_output_without_a_bucket_is_a_clear_error(worker_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_INLINE_OUTPUT_MB", "1")
    handler_module.worker.cache_clear()
    fake.mp4_bytes = os.urandom(2 * 1000 * 1000)
    result = handler(job())
    assert result["error_code"] == "OUTPUT_TOO_LARGE"
    assert "BUCKET_" in result["error"] and result["details"]["bytes"] == 2 * 1000 * 1000
    assert leftovers(fake) == []


def test_upload_failure_is_reported_without_secrets(bucket_env, fake, monkeypatch):
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "definitely-the-wrong-secret")
    handler_module.worker.cache_clear()
    result = handler(job())
    assert result["error_code"] == "UPLOAD_FAILED"
    dumped = json.dumps(result)
    assert "definitely-the-wrong-secret" not in dumped and bucket_env["BUCKET_ACCESS_KEY_ID"] not in dumped


def test_storage_down_is_upload_failed(bucket_env, fake, monkeypatch):
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    handler_module.worker.cache_clear()
    result = handler(job())
    assert result["error_code"] == "UPLOAD_FAILED"


def test_workflow_mode_returns_s3_urls_like_worker_comfyui(bucket_env, fake):
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]
    result = handler({"id": "wf-s3", "input": {"workflow": two_image_workflow(), "images": images}})
    assert "error" not in result, result
    assert {i["type"] for i in result["images"]} == {"s3_url"}
    mp4 = next(i for i in result["images"] if i["filename"].endswith(".mp4"))
    assert requests.get(mp4["data"], timeout=10).content == fake.mp4_bytes
