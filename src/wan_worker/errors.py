"""The one error type the pipeline raises, and how it becomes a RunPod result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INVALID_INPUT = "INVALID_INPUT"
IMAGE_UNREADABLE = "IMAGE_UNREADABLE"
MODELS_MISSING = "MODELS_MISSING"
MODEL_DAMAGED = "MODEL_DAMAGED"
LORA_DOWNLOAD_FAILED = "LORA_DOWNLOAD_FAILED"
LORA_INCOMPATIBLE = "LORA_INCOMPATIBLE"
COMFY_UNAVAILABLE = "COMFY_UNAVAILABLE"
WORKFLOW_REJECTED = "WORKFLOW_REJECTED"
EXECUTION_FAILED = "EXECUTION_FAILED"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
TIMEOUT = "TIMEOUT"
NO_OUTPUT = "NO_OUTPUT"
OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
UPLOAD_FAILED = "UPLOAD_FAILED"
STARTUP_FAILED = "STARTUP_FAILED"
INTERNAL_ERROR = "INTERNAL_ERROR"


@dataclass
class WorkerError(Exception):
    """A failure with a stable code, one clear sentence for the user, and structured details.

    `message` says what failed and what to do; it never holds a traceback, base64 or a secret.
    """

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_result(self) -> dict[str, Any]:
        """The handler's return value for this failure (RunPod keeps `error` as the job error)."""
        return {"error": self.message, "error_code": self.code, "details": self.details}
