"""The one error type the pipeline raises, and how it becomes a RunPod result."""
from __future__ import annotations

import re
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
        """The handler's return value for this failure. The RunPod SDK keeps only the `error`
        string of a failed job (the rest of the dict never reaches the caller, on the platform and
        in the local API server alike), so that string begins with the code: `CODE: sentence`."""
        return {"error": str(self), "error_code": self.code, "details": self.details}


def invalid(field: str, message: str) -> WorkerError:
    """INVALID_INPUT naming the job field (`segments[2].length`) and what to do about it."""
    return WorkerError(INVALID_INPUT, f"Invalid input: `{field}` {message}.",
                       {"errors": [{"field": field, "message": message}]})


ERROR_TEXT = re.compile(r"^([A-Z][A-Z0-9_]+): (.*)$", re.DOTALL)


def split_error(text: str) -> tuple[str | None, str]:
    """`CODE: sentence` (what a failed job's `error` holds) back into its code and sentence; any
    other text has no code."""
    match = ERROR_TEXT.match(text)
    return (match.group(1), match.group(2)) if match else (None, text)
