"""A stand-in ComfyUI 0.3.64 for the tests: see server.py for the API and validate.py for the checks.

    from tests.fakecomfy import FakeComfy, validate_prompt
"""
from .server import (FIXTURES_DIR, MP4_PATH, OBJECT_INFO_PATH, FakeComfy, RecordedRequest, load_object_info,
                     serve)
from .validate import Validation, check_prompt, validate_prompt

__all__ = ["FIXTURES_DIR", "MP4_PATH", "OBJECT_INFO_PATH", "FakeComfy", "RecordedRequest", "Validation",
           "check_prompt", "load_object_info", "serve", "validate_prompt"]
