"""S3 delivery against a real S3-compatible server (rclone serve s3 on 127.0.0.1).

rclone verifies SigV4 signatures, presigned URLs and multipart uploads for real, so a wrong secret
fails here the way it fails on AWS, R2 or MinIO. One server serves the whole module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.s3server import S3Server, closed_port, s3_server
from wan_worker import s3
from wan_worker.errors import UPLOAD_FAILED, WorkerError
from wan_worker.settings import Settings, load_settings

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as srv:
        yield srv


@pytest.fixture
def settings(server: S3Server) -> Settings:
    return Settings(
        bucket_endpoint_url=server.endpoint,
        bucket_access_key_id=server.access_key,
        bucket_secret_access_key=server.secret_key,
        bucket_name=server.bucket,
    )


def write_file(path: Path, size: int) -> Path:
    """An MP4-looking file of `size` bytes, written in 1 MB blocks (never held whole in memory)."""
    with path.open("wb") as f:
        f.write(MP4_HEAD)
        left = size - len(MP4_HEAD)
        while left > 0:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            left -= len(block)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_url(url: str) -> tuple[str, requests.structures.CaseInsensitiveDict]:
    with requests.get(url, stream=True, timeout=30) as resp:
        resp.raise_for_status()
        digest = hashlib.sha256()
        for block in resp.iter_content(1 << 20):
            digest.update(block)
        return digest.hexdigest(), resp.headers


def upload_error(path: Path, settings: Settings, key: str = "wan-worker/job/out.mp4") -> WorkerError:
    with pytest.raises(WorkerError) as info:
        s3.upload_file(path, key, settings)
    assert info.value.code == UPLOAD_FAILED
    return info.value


def assert_no_credentials(err: WorkerError, settings: Settings) -> None:
    shown = err.message + repr(err.details) + repr(err.to_result())
    assert settings.bucket_secret_access_key not in shown
    assert settings.bucket_access_key_id not in shown


# --- happy paths ------------------------------------------------------------------------------


def test_small_upload_returns_working_presigned_url(server: S3Server, settings: Settings, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    src = write_file(tmp_path / "wan_00001_.mp4", 50_000)
    key = s3.object_key("job-1", src.name)
    with caplog.at_level(logging.DEBUG, logger="wan_worker"):
        up = s3.upload_file(src, key, settings)

    assert up.key == key and up.bytes == 50_000
    assert up.url.startswith(f"{server.endpoint}/{server.bucket}/{key}?")
    assert "X-Amz-Expires=604800" in up.url and "X-Amz-Signature=" in up.url
    resp = requests.get(up.url, timeout=10)
    assert resp.status_code == 200
    assert resp.content == src.read_bytes()
    # rclone keeps object metadata (in memory) and serves the stored Content-Type on GET.
    assert resp.headers["Content-Type"] == "video/mp4"
    assert (server.bucket_dir() / key).read_bytes() == src.read_bytes()
    # The worker's own log lines name the key and host, never the URL's signature or a key.
    assert "X-Amz-Signature" not in caplog.text and up.url not in caplog.text
    assert settings.bucket_secret_access_key not in caplog.text


def test_caller_content_type_is_stored(settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "frame.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    up = s3.upload_file(src, s3.object_key("job-2", src.name), settings, content_type="image/png")
    resp = requests.get(up.url, timeout=10)
    assert resp.content == src.read_bytes()
    assert resp.headers["Content-Type"] == "image/png"


def test_large_file_goes_multipart_and_streams_from_disk(settings: Settings, tmp_path: Path) -> None:
    size = 60 * 1024 * 1024
    src = write_file(tmp_path / "big.mp4", size)
    calls: dict[str, int] = {}

    def count(event_name: str, **_: object) -> None:
        op = event_name.rsplit(".", 1)[-1]
        calls[op] = calls.get(op, 0) + 1

    client = s3.connection(settings).client
    ops = ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject")
    for op in ops:
        client.meta.events.register(f"before-call.s3.{op}", count)
    tracemalloc.start()
    try:
        up = s3.upload_file(src, s3.object_key("job-big", src.name), settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        for op in ops:
            client.meta.events.unregister(f"before-call.s3.{op}", count)

    assert calls == {"CreateMultipartUpload": 1, "UploadPart": 4, "CompleteMultipartUpload": 1}
    assert up.bytes == size
    # Parts are read from disk as they are sent: the peak stays below even one 16 MB part.
    assert peak < s3.PART_BYTES, f"upload peaked at {peak / 2**20:.1f} MB of Python memory"
    digest, headers = sha256_url(up.url)
    assert digest == sha256_file(src)
    assert headers["Content-Type"] == "video/mp4"


@contextmanager
def lose_uploads(settings: Settings, times: int) -> Iterator[list[str]]:
    """Make the real server drop the multipart upload just before the worker's client completes
    it, the first `times` times: rclone then answers NoSuchUpload, as a store does when a retried
    Complete finds its upload gone. Yields the upload ids it dropped."""
    client = s3.connection(settings).client
    dropped: list[str] = []

    def drop(params: dict, **_: object) -> None:
        if len(dropped) < times:
            client.abort_multipart_upload(Bucket=params["Bucket"], Key=params["Key"], UploadId=params["UploadId"])
            dropped.append(params["UploadId"])

    event = "provide-client-params.s3.CompleteMultipartUpload"
    client.meta.events.register(event, drop)
    try:
        yield dropped
    finally:
        client.meta.events.unregister(event, drop)


def test_a_lost_multipart_upload_is_sent_again_whole(
    server: S3Server, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_file(tmp_path / "lost.mp4", 40 * 1024 * 1024)
    with lose_uploads(settings, times=1) as dropped:
        up = s3.upload_file(src, s3.object_key("job-lost", src.name), settings)
    assert len(dropped) == 1
    assert "lost the multipart upload of wan-worker/job-lost/lost.mp4 (NoSuchUpload); sending it again" in caplog.text
    digest, _ = sha256_url(up.url)
    assert digest == sha256_file(src)
    # The dropped upload left nothing beside the object.
    assert [p.name for p in (server.bucket_dir() / "wan-worker/job-lost").iterdir()] == ["lost.mp4"]


def test_an_upload_lost_twice_is_upload_failed(settings: Settings, tmp_path: Path) -> None:
    src = write_file(tmp_path / "lost2.mp4", 20 * 1024 * 1024)
    with lose_uploads(settings, times=2) as dropped, pytest.raises(WorkerError) as err:
        s3.upload_file(src, s3.object_key("job-lost2", src.name), settings)
    assert len(dropped) == s3.WHOLE_ATTEMPTS == 2
    assert err.value.code == UPLOAD_FAILED
    assert "dropped the video's multipart upload twice (NoSuchUpload)" in err.value.message
    assert "check the storage's free space and health" in err.value.message
    assert err.value.details["s3_error_code"] == "NoSuchUpload"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs: a storage server whose disk fills up during an upload."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_storage_with_a_full_disk_is_upload_failed_naming_free_space(small_disk: Path, tmp_path: Path) -> None:
    # Where the disk fills decides the answer: a 500 for the part being written, or (the parts
    # taken, the object not) a dropped upload, NoSuchUpload to the retried Complete. Either way the
    # error points at the storage, not at the bucket settings.
    src = write_file(tmp_path / "full.mp4", 20 * 1024 * 1024)
    with s3_server(small_disk / "s3") as full:
        settings = Settings(bucket_endpoint_url=full.endpoint, bucket_access_key_id=full.access_key,
                            bucket_secret_access_key=full.secret_key, bucket_name=full.bucket)
        with pytest.raises(WorkerError) as err:
            s3.upload_file(src, s3.object_key("job-full", src.name), settings)
        assert "no space left on device" in full.log_tail()
    assert err.value.code == UPLOAD_FAILED
    assert err.value.details["s3_error_code"] in ("InternalError", "NoSuchUpload")
    assert "check the storage's free space and health" in err.value.message


def test_bucket_taken_from_path_style_endpoint(server: S3Server, settings: Settings, tmp_path: Path) -> None:
    # Through the API: rclone's VFS directory cache would not see a folder made on disk now.
    s3.connection(settings).client.create_bucket(Bucket="from-url")
    from_url = dataclasses.replace(settings, bucket_endpoint_url=f"{server.endpoint}/from-url/", bucket_name="")
    src = write_file(tmp_path / "a.mp4", 1000)
    up = s3.upload_file(src, s3.object_key("job-3", src.name), from_url)
    assert up.url.startswith(f"{server.endpoint}/from-url/{up.key}?")
    assert (server.root / "from-url" / up.key).read_bytes() == src.read_bytes()
    assert requests.get(up.url, timeout=10).content == src.read_bytes()


def test_public_url_replaces_presigned_url(server: S3Server, settings: Settings, tmp_path: Path) -> None:
    public = dataclasses.replace(settings, bucket_public_url="https://cdn.example.com/videos/")
    src = write_file(tmp_path / "b.mp4", 1000)
    up = s3.upload_file(src, s3.object_key("job-4", src.name), public)
    assert up.url == f"https://cdn.example.com/videos/{up.key}"
    assert (server.bucket_dir() / up.key).is_file()


def test_expiry_is_capped_at_the_sigv4_maximum(settings: Settings, tmp_path: Path) -> None:
    long_lived = dataclasses.replace(settings, presigned_url_expiry_s=30 * 86400)
    up = s3.upload_file(write_file(tmp_path / "c.mp4", 100), "wan-worker/job-5/c.mp4", long_lived)
    assert "X-Amz-Expires=604800" in up.url
    short = dataclasses.replace(settings, presigned_url_expiry_s=60)
    assert "X-Amz-Expires=60&" in s3.upload_file(tmp_path / "c.mp4", "wan-worker/job-5/c.mp4", short).url


def test_client_is_built_once_per_settings(settings: Settings) -> None:
    assert s3.connection(settings) is s3.connection(dataclasses.replace(settings))
    assert s3.connection(settings) is not s3.connection(dataclasses.replace(settings, bucket_name="other"))


# --- failures ---------------------------------------------------------------------------------


def test_wrong_secret_is_a_credentials_error_without_the_secret(settings: Settings, tmp_path: Path) -> None:
    bad = dataclasses.replace(settings, bucket_secret_access_key="not-the-right-secret-9876")
    err = upload_error(write_file(tmp_path / "d.mp4", 1000), bad)
    assert "credentials" in err.message and "BUCKET_SECRET_ACCESS_KEY" in err.message
    assert err.details["s3_error_code"] == "SignatureDoesNotMatch"
    assert err.details["endpoint_host"].startswith("127.0.0.1:")
    assert_no_credentials(err, bad)


def test_unknown_access_key_is_a_credentials_error_without_the_key(settings: Settings, tmp_path: Path) -> None:
    bad = dataclasses.replace(settings, bucket_access_key_id="AKIANOSUCHKEY1234")
    err = upload_error(write_file(tmp_path / "e.mp4", 1000), bad)
    assert "credentials" in err.message
    assert err.details["s3_error_code"] == "InvalidAccessKeyId"
    assert_no_credentials(err, bad)


def test_wrong_secret_on_multipart_upload(settings: Settings, tmp_path: Path) -> None:
    bad = dataclasses.replace(settings, bucket_secret_access_key="not-the-right-secret-9876")
    err = upload_error(write_file(tmp_path / "f.mp4", s3.PART_BYTES + 1), bad)
    assert err.details["s3_error_code"] == "SignatureDoesNotMatch"
    assert_no_credentials(err, bad)


def test_missing_bucket_is_named(settings: Settings, tmp_path: Path) -> None:
    missing = dataclasses.replace(settings, bucket_name="no-such-bucket")
    err = upload_error(write_file(tmp_path / "g.mp4", 1000), missing)
    assert "no-such-bucket" in err.message and "does not exist" in err.message
    assert err.details["s3_error_code"] == "NoSuchBucket"
    assert err.details["bucket"] == "no-such-bucket"
    assert_no_credentials(err, missing)


def test_server_down_fails_within_seconds(settings: Settings, tmp_path: Path) -> None:
    port = closed_port()
    down = dataclasses.replace(settings, bucket_endpoint_url=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    err = upload_error(write_file(tmp_path / "h.mp4", 1000), down)
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in err.message and "BUCKET_ENDPOINT_URL" in err.message
    assert err.details["error_type"] == "EndpointConnectionError"
    assert_no_credentials(err, down)


def test_unreadable_file_is_an_upload_error(settings: Settings, tmp_path: Path) -> None:
    err = upload_error(tmp_path / "never-written.mp4", settings)
    assert "output file" in err.message


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "ftp://host/bucket", "http://host:port/b",
                                      "http://host/a/b"])
def test_bad_endpoint_settings_fail_clearly(endpoint: str, tmp_path: Path) -> None:
    bad = Settings(bucket_endpoint_url=endpoint, bucket_access_key_id="id", bucket_secret_access_key="secret")
    err = upload_error(tmp_path / "x.mp4", bad)
    assert "BUCKET_" in err.message


# --- settings and keys ------------------------------------------------------------------------


def test_settings_from_environment_and_secret_not_in_repr() -> None:
    env = {"BUCKET_ENDPOINT_URL": "https://b.s3.eu-west-1.amazonaws.com", "BUCKET_ACCESS_KEY_ID": "AKIAEXAMPLE",
           "BUCKET_SECRET_ACCESS_KEY": "shh-secret", "PRESIGNED_URL_EXPIRY_S": "3600"}
    settings = load_settings(env)
    assert settings.s3_configured and settings.presigned_url_expiry_s == 3600
    assert "shh-secret" not in repr(settings) and "AKIAEXAMPLE" not in repr(settings)
    assert not load_settings({"BUCKET_ENDPOINT_URL": "https://x"}).s3_configured
    with pytest.raises(WorkerError):
        load_settings({"PRESIGNED_URL_EXPIRY_S": "0"})


@pytest.mark.parametrize(
    ("endpoint", "bucket_name", "expected"),
    [
        ("https://vids.s3.us-west-2.amazonaws.com", "",
         ("vids", "https://s3.us-west-2.amazonaws.com", "us-west-2", "virtual")),
        ("https://vids.s3.amazonaws.com", "", ("vids", "https://s3.amazonaws.com", "us-east-1", "virtual")),
        ("https://my.vids.s3-eu-west-1.amazonaws.com", "",
         ("my.vids", "https://s3-eu-west-1.amazonaws.com", "eu-west-1", "path")),
        ("https://s3.eu-central-1.amazonaws.com", "vids",
         ("vids", "https://s3.eu-central-1.amazonaws.com", "eu-central-1", "virtual")),
        ("https://vids.s3.us-west-004.backblazeb2.com", "",
         ("vids", "https://s3.us-west-004.backblazeb2.com", "us-west-004", "path")),
        ("https://vids.nyc3.digitaloceanspaces.com", "", ("vids", "https://nyc3.digitaloceanspaces.com", "nyc3", "path")),
        ("https://acct.r2.cloudflarestorage.com/vids", "",
         ("vids", "https://acct.r2.cloudflarestorage.com", "us-east-1", "path")),
        ("http://minio:9000/vids", "other", ("other", "http://minio:9000", "us-east-1", "path")),
        ("http://key:pw@minio:9000", "vids", ("vids", "http://minio:9000", "us-east-1", "path")),
    ],
)
def test_resolve_bucket(endpoint: str, bucket_name: str, expected: tuple[str, str, str, str]) -> None:
    settings = Settings(bucket_endpoint_url=endpoint, bucket_access_key_id="id", bucket_secret_access_key="secret",
                        bucket_name=bucket_name)
    b = s3.resolve_bucket(settings)
    assert (b.name, b.endpoint_url, b.region, b.addressing_style) == expected


def test_region_botocore_refuses_is_a_clear_error(tmp_path: Path) -> None:
    bad = Settings(bucket_endpoint_url="http://minio:9000/vids", bucket_access_key_id="id",
                   bucket_secret_access_key="secret", bucket_region="not a region!")
    err = upload_error(tmp_path / "x.mp4", bad)
    assert "BUCKET_REGION" in err.message


def test_bucket_region_setting_wins() -> None:
    settings = Settings(bucket_endpoint_url="http://minio:9000/vids", bucket_access_key_id="id",
                        bucket_secret_access_key="secret", bucket_region="eu-north-1")
    assert s3.resolve_bucket(settings).region == "eu-north-1"


@pytest.mark.parametrize(
    ("job_id", "filename", "expected"),
    [
        ("abc-123", "wan_00001_.mp4", "wan-worker/abc-123/wan_00001_.mp4"),
        ("sync-4f2a/../../etc", "out.mp4", "wan-worker/sync-4f2a_.._.._etc/out.mp4"),  # one segment
        ("..", "..", "wan-worker/job/output"),
        ("", "", "wan-worker/job/output"),
        ("job id with spaces ü", "my video?.mp4", "wan-worker/job_id_with_spaces/my_video_.mp4"),
        (".hidden", "a/b\\c.mp4", "wan-worker/hidden/a_b_c.mp4"),
    ],
)
def test_object_key_is_sanitized(job_id: str, filename: str, expected: str) -> None:
    key = s3.object_key(job_id, filename)
    assert key == expected
    assert re.fullmatch(r"wan-worker/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", key)


def test_object_key_is_bounded() -> None:
    key = s3.object_key("j" * 1000, "f" * 1000 + ".mp4")
    assert len(key) <= len("wan-worker//") + 2 * 128
    assert key.endswith("ffff.mp4")
