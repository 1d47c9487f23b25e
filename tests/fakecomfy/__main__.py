"""`python -m tests.fakecomfy [ComfyUI flags]`: main.py with the current folder as base directory."""
import sys
from pathlib import Path

from .main import main

sys.exit(main(default_base=Path.cwd()))
