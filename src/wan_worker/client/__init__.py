"""wan-video: the command-line client of a wan-worker endpoint (image + prompt -> MP4 on disk).

Separate from the worker: the worker never imports it, and it imports nothing of the worker.
`main()` is the console script; see cli.py for the options and exit codes.
"""
from .cli import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
