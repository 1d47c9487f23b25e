"""wan-worker: a RunPod serverless worker for Wan2.2 14B image-to-video on a local ComfyUI."""

__version__ = "0.1.0"
