"""Delivery to S3-compatible storage: stream a file up, hand back a presigned (or public) URL.

The settings use RunPod's variable names so an endpoint configured for RunPod's own `rp_upload`
works here unchanged: the bucket may be given as BUCKET_NAME or be part of BUCKET_ENDPOINT_URL,
either AWS virtual-host style (`https://<bucket>.s3.<region>.amazonaws.com`) or path style
(`https://host/<bucket>`, as for MinIO, R2 and most self-hosted stores).

Every failure becomes one WorkerError(UPLOAD_FAILED) that names what failed and what to do, with
the S3 error code and the endpoint host, and never the keys. Presigned URLs are returned, not logged:
their query string is a bearer credential for a week.
"""
from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

import boto3.session
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .errors import UPLOAD_FAILED, WorkerError
from .settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "wan-worker"
MAX_PRESIGN_S = 604800  # SigV4 presigned URLs cannot live longer than 7 days
PART_BYTES = 16 * 1024 * 1024

# Multipart above 16 MB in 16 MB parts, read from disk as they are sent, so memory stays flat
# whatever the video's size. Few threads: parts sent in order suit servers that stream parts into
# one object (rclone, some gateways), and a worker has one video at a time to send.
TRANSFER = TransferConfig(
    multipart_threshold=PART_BYTES,
    multipart_chunksize=PART_BYTES,
    max_concurrency=4,
    use_threads=True,
)

# A dead endpoint must fail a job in seconds, not after botocore's minute-long defaults.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 3  # in total, with botocore's jittered backoff (< 1 s, < 2 s) in between
WHOLE_ATTEMPTS = 2  # whole uploads, when the store drops a multipart upload (see _transfer)

# Hosts that carry the bucket in their name: (optional bucket).(service host, which has the region).
_AWS_HOST = re.compile(
    r"^(?:(?P<bucket>.+)\.)?(?P<service>s3(?:[.-](?P<region>[a-z]{2}(?:-[a-z]+)+-\d+))?\.amazonaws\.com(?:\.cn)?)$"
)
_OTHER_VIRTUAL_HOSTS = (
    # Backblaze B2 and Wasabi: <bucket>.s3.<region>.backblazeb2.com / .wasabisys.com
    re.compile(r"^(?:(?P<bucket>.+)\.)?(?P<service>s3\.(?P<region>[a-z0-9-]+)\.(?:backblazeb2|wasabisys)\.com)$"),
    # DigitalOcean Spaces: <bucket>.<region>.digitaloceanspaces.com
    re.compile(r"^(?:(?P<bucket>.+)\.)?(?P<service>(?P<region>[a-z]+\d+)\.digitaloceanspaces\.com)$"),
)

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "Unauthorized",
}
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Uploaded:
    """Where a delivered file now lives: the URL to hand the client, its key, and its size."""

    url: str
    key: str
    bytes: int


@dataclass(frozen=True)
class Bucket:
    """The bucket the settings point at, with the endpoint boto3 should talk to (bucket removed)."""

    name: str
    endpoint_url: str
    region: str
    addressing_style: str  # "virtual" (AWS) or "path" (everything else)
    host: str  # for messages: the endpoint's host[:port], never a credential
    aws: bool


@dataclass(frozen=True)
class _Connection:
    bucket: Bucket
    client: BaseClient


def object_key(job_id: str, filename: str) -> str:
    """`wan-worker/<job id>/<filename>` with only [A-Za-z0-9._-] in each part.

    Job ids come from clients (or `test_input.json`), so anything odd is replaced: slashes, spaces,
    unicode and `.`/`..` segments would otherwise become folders, break URLs or be refused by
    stores that map keys to paths.
    """
    return f"{KEY_PREFIX}/{_key_part(job_id, 'job')}/{_key_part(filename, 'output')}"


def _key_part(text: str, fallback: str, max_len: int = 128) -> str:
    cleaned = _UNSAFE_KEY_CHARS.sub("_", text).strip("._")
    if len(cleaned) > max_len:  # shorten the stem, keep the extension (.mp4 matters to players)
        stem, dot, ext = cleaned.rpartition(".")
        suffix = dot + ext if stem and len(ext) <= 8 else ""
        cleaned = cleaned[: max_len - len(suffix)].rstrip("._") + suffix
    return cleaned or fallback


def upload_file(path: Path, key: str, settings: Settings, content_type: str = "video/mp4") -> Uploaded:
    """Stream `path` to the configured bucket under `key` and return a URL the client can fetch."""
    conn = connection(settings)
    started = time.monotonic()
    try:
        size = path.stat().st_size
        _transfer(conn, path, key, content_type)
        url = _result_url(conn, key, settings)
    except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
        raise _upload_error(exc, conn.bucket, key, settings) from None
    log.info(
        "Uploaded %s (%d bytes) to bucket %s at %s in %.0f ms",
        key, size, conn.bucket.name, conn.bucket.host, (time.monotonic() - started) * 1000,
    )
    return Uploaded(url=url, key=key, bytes=size)


def _transfer(conn: _Connection, path: Path, key: str, content_type: str) -> None:
    """One upload, sent again whole if the store lost the multipart upload under it.

    botocore retries each request, but a retried request cannot bring back an upload id the store
    has already dropped: a CompleteMultipartUpload that failed on the server (or whose answer was
    lost) and was retried is answered NoSuchUpload, on some stores even when the object was
    written. The file is still on disk, so one more whole upload saves the job's video.
    """
    for attempt in range(1, WHOLE_ATTEMPTS + 1):
        try:
            conn.client.upload_file(
                str(path), conn.bucket.name, key, ExtraArgs={"ContentType": content_type}, Config=TRANSFER
            )
            return
        except (ClientError, Boto3Error) as exc:
            client_error = _find_cause(exc, ClientError)
            lost = isinstance(client_error, ClientError) and _error_code(client_error) == "NoSuchUpload"
            if not lost or attempt == WHOLE_ATTEMPTS:
                raise
            log.warning("The S3 store at %s lost the multipart upload of %s (NoSuchUpload); sending it again",
                        conn.bucket.host, key)


def _result_url(conn: _Connection, key: str, settings: Settings) -> str:
    """The public URL when BUCKET_PUBLIC_URL is set, else a presigned GET URL."""
    if settings.bucket_public_url:
        return f"{settings.bucket_public_url.rstrip('/')}/{quote(key, safe='/')}"
    return conn.client.generate_presigned_url(
        "get_object",
        Params={"Bucket": conn.bucket.name, "Key": key},
        ExpiresIn=min(settings.presigned_url_expiry_s, MAX_PRESIGN_S),
    )


@functools.lru_cache(maxsize=8)
def connection(settings: Settings) -> _Connection:
    """The bucket and its boto3 client for these settings, built once and shared.

    boto3 clients are thread-safe and building one costs tens of milliseconds (endpoint rules,
    service model), so a warm worker pays it once, not on every job.
    """
    bucket = resolve_bucket(settings)
    if settings.presigned_url_expiry_s > MAX_PRESIGN_S and not settings.bucket_public_url:
        log.warning("PRESIGNED_URL_EXPIRY_S=%d is above the S3 limit; using %d (7 days)",
                    settings.presigned_url_expiry_s, MAX_PRESIGN_S)
    try:
        client = _build_client(bucket, settings)
    except (BotoCoreError, ValueError) as exc:  # e.g. a BUCKET_REGION botocore refuses
        raise _config_error(f"Could not set up the S3 client for {bucket.host} ({type(exc).__name__}); "
                            "check BUCKET_ENDPOINT_URL and BUCKET_REGION.", bucket.host) from None
    return _Connection(bucket=bucket, client=client)


def _build_client(bucket: Bucket, settings: Settings) -> BaseClient:
    checksums: dict[str, str] = {}
    if not bucket.aws:
        # botocore >= 1.36 adds CRC checksums (and aws-chunked bodies) that many S3-compatible
        # stores reject; only send them when an operation requires them.
        checksums = {"request_checksum_calculation": "when_required",
                     "response_checksum_validation": "when_required"}
    config = Config(
        signature_version="s3v4",
        region_name=bucket.region,
        s3={"addressing_style": bucket.addressing_style},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=max(10, TRANSFER.max_request_concurrency),
        **checksums,
    )
    session = boto3.session.Session(
        aws_access_key_id=settings.bucket_access_key_id,
        aws_secret_access_key=settings.bucket_secret_access_key,
        region_name=bucket.region,
    )
    return session.client("s3", endpoint_url=bucket.endpoint_url, config=config)


def resolve_bucket(settings: Settings) -> Bucket:
    """Work out bucket, endpoint, region and addressing from the settings, or fail clearly.

    BUCKET_NAME wins when set; otherwise the bucket comes from the endpoint URL's host (AWS,
    Backblaze, Wasabi, DigitalOcean virtual-host names) or its first path segment.
    """
    if not settings.s3_configured:
        raise _config_error("S3 delivery needs BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and "
                            "BUCKET_SECRET_ACCESS_KEY; set all three or ask for base64 output.", "")
    parts = urlsplit(settings.bucket_endpoint_url.strip())
    host, port = parts.hostname or "", _port(parts)
    if parts.scheme not in ("http", "https") or not host or port is None:
        raise _config_error("BUCKET_ENDPOINT_URL must be an http(s) URL such as "
                            "https://<bucket>.s3.<region>.amazonaws.com or https://host/<bucket>.", host)
    host_bucket, service_host, host_region, aws = _split_host(host)
    shown = _bracketed(host) + port
    path_bucket = _path_bucket(parts.path, shown)
    url_bucket = host_bucket or path_bucket
    name = settings.bucket_name or url_bucket
    if not name:
        raise _config_error(f"No bucket given for {shown}: set BUCKET_NAME or put the bucket in "
                            "BUCKET_ENDPOINT_URL (https://host/<bucket>).", shown)
    if settings.bucket_name and url_bucket and url_bucket != settings.bucket_name:
        log.warning("BUCKET_NAME=%s differs from the bucket %s in BUCKET_ENDPOINT_URL; using BUCKET_NAME",
                    settings.bucket_name, url_bucket)
    return Bucket(
        name=name,
        endpoint_url=f"{parts.scheme}://{_bracketed(service_host)}{port}",  # no user:password@, no path
        region=settings.bucket_region or host_region or "us-east-1",
        # Virtual-host names only work for DNS-safe bucket names without dots (TLS wildcard).
        addressing_style="virtual" if aws and "." not in name else "path",
        host=shown,
        aws=aws,
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # IPv6 literal


def _port(parts: SplitResult) -> str | None:
    """":<port>" or "" when the URL has none; None when the port is not a number."""
    try:
        return f":{parts.port}" if parts.port else ""
    except ValueError:
        return None


def _split_host(host: str) -> tuple[str, str, str, bool]:
    """(bucket in the host name or "", host to use as endpoint, region or "", is AWS)."""
    match = _AWS_HOST.match(host)
    if match:
        return match["bucket"] or "", match["service"], match["region"] or "", True
    for pattern in _OTHER_VIRTUAL_HOSTS:
        match = pattern.match(host)
        if match:
            return match["bucket"] or "", match["service"], match["region"], False
    return "", host, "", False


def _path_bucket(path: str, host: str) -> str:
    segments = [s for s in path.split("/") if s]
    if len(segments) > 1:
        raise _config_error(f"BUCKET_ENDPOINT_URL has a path with several parts ({path}); give "
                            "only the bucket, as https://host/<bucket>.", host)
    return segments[0] if segments else ""


def _config_error(message: str, host: str) -> WorkerError:
    return WorkerError(UPLOAD_FAILED, message, {"endpoint_host": host} if host else {})


def _upload_error(exc: BaseException, bucket: Bucket, key: str, settings: Settings) -> WorkerError:
    """One clear sentence for any failure, with the S3 code and host and no credential in it."""
    details: dict[str, Any] = {"endpoint_host": bucket.host, "bucket": bucket.name, "key": key}
    client_error = _find_cause(exc, ClientError)
    if isinstance(client_error, ClientError):
        return _client_error(client_error, bucket, details, settings)
    transport = _find_cause(exc, BotoCoreError) or exc
    details["error_type"] = type(transport).__name__
    log.warning("Upload of %s to %s failed: %s", key, bucket.host, type(transport).__name__)
    if isinstance(transport, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        message = (f"Could not connect to the S3 endpoint {bucket.host}; check BUCKET_ENDPOINT_URL "
                   "and that the storage is up and reachable from the worker.")
    elif isinstance(transport, ReadTimeoutError):
        message = (f"The S3 endpoint {bucket.host} stopped answering during the upload; "
                   "retry the job, and check the storage's health if it keeps happening.")
    elif isinstance(transport, OSError) and not isinstance(transport, BotoCoreError):
        message = "Could not read the output file to upload it; check the worker's disk and retry."
    else:
        details["reason"] = _scrub(str(transport), settings)[:300]
        message = (f"Uploading the output to bucket {bucket.name} at {bucket.host} failed; "
                   "check the bucket settings and retry.")
    return WorkerError(UPLOAD_FAILED, message, details)


def _client_error(exc: ClientError, bucket: Bucket, details: dict[str, Any], settings: Settings) -> WorkerError:
    error = exc.response.get("Error", {})
    code = _error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    details.update({"s3_error_code": code, "http_status": status,
                    "s3_message": _scrub(str(error.get("Message", "")), settings)[:300]})
    log.warning("Upload to bucket %s at %s refused: %s (HTTP %s)", bucket.name, bucket.host, code, status)
    where = f"bucket {bucket.name} at {bucket.host}"
    if code in _CREDENTIAL_CODES:
        message = (f"The S3 storage at {bucket.host} rejected the credentials ({code}); check "
                   "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY.")
    elif code == "NoSuchBucket" or (code == "404" and status == 404):
        message = (f"Bucket {bucket.name} does not exist at {bucket.host}; create it or fix "
                   "BUCKET_NAME / BUCKET_ENDPOINT_URL.")
    elif code in ("AccessDenied", "Forbidden", "403"):
        message = (f"The S3 storage denied writing to {where} ({code}); give the access key "
                   "write permission on the bucket or fix the bucket name.")
    elif code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        message = (f"Bucket {bucket.name} is in another region than {bucket.region} ({code}); "
                   "set BUCKET_REGION or use the bucket's regional endpoint.")
    elif code == "NoSuchUpload":
        message = (f"The S3 storage at {bucket.host} dropped the video's multipart upload twice ({code}), "
                   "which stores do when they fail to write the parts (a full disk, a restart); check the "
                   "storage's free space and health, then retry.")
    elif isinstance(status, int) and status >= 500:
        message = (f"The S3 storage at {bucket.host} failed on its side ({code}, HTTP {status}) after "
                   f"{MAX_ATTEMPTS} attempts; check the storage's free space and health, then retry.")
    else:
        message = f"Uploading the output to {where} failed with S3 error {code}; check the bucket and retry."
    return WorkerError(UPLOAD_FAILED, message, details)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "Unknown")


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in the chain: boto3 wraps ClientError in S3UploadFailedError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _scrub(text: str, settings: Settings) -> str:
    """Servers echo request parts in error messages; make sure no key ever comes back to the user."""
    for secret in (settings.bucket_secret_access_key, settings.bucket_access_key_id):
        if secret:
            text = text.replace(secret, "***")
    return text
