"""Logging with the job id on every line, without passing the id through every module."""
from __future__ import annotations

import logging
from contextvars import ContextVar

job_id: ContextVar[str] = ContextVar("job_id", default="-")


class _JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = job_id.get()
        return True


# At DEBUG these libraries log request signatures and full URLs (presigned URLs are credentials).
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "websocket")


def setup(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_JobIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(job_id)s] %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler], force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))
