"""wan-worker's ComfyUI nodes: RIFE frame interpolation between decoding and CreateVideo.

ComfyUI 0.3.64 has no interpolation node, so the worker ships this one (the image installs it into
ComfyUI's custom_nodes/). Two nodes, as ComfyUI's own upscaler is split: the loader's output stays
in ComfyUI's cache from job to job, so the weights are read once per worker, not once per job.
The frames never leave ComfyUI: they go from VAEDecode through these nodes to the one H.264 encode.
"""
from __future__ import annotations

import os

import comfy.model_management
import comfy.utils
import folder_paths

from .rife import interpolate, load_ifnet

FOLDER = "frame_interpolation"  # extra_model_paths.yaml lists it for every volume layout
MAX_FACTOR = 5  # up to 4 frames between each pair (fal's num_interpolated_frames 0-4)

# A folder ComfyUI does not know: its own models/<folder> is added after the paths of
# extra_model_paths.yaml (which ComfyUI read before loading custom nodes), as the worker's check expects.
folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


class LoadRIFE:
    """A RIFE 4.x model from the frame_interpolation folder."""

    CATEGORY = "wan-worker"
    RETURN_TYPES = ("RIFE_MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"model_name": (folder_paths.get_filename_list(FOLDER),)}}

    def load(self, model_name: str) -> tuple:
        return (load_ifnet(folder_paths.get_full_path_or_raise(FOLDER, model_name)),)


class RIFEInterpolate:
    """`multiplier`-1 frames between each pair: N frames become (N-1)*multiplier+1."""

    CATEGORY = "wan-worker"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"rife_model": ("RIFE_MODEL",), "images": ("IMAGE",),
                             "multiplier": ("INT", {"default": 2, "min": 1, "max": MAX_FACTOR})}}

    def run(self, rife_model, images, multiplier: int) -> tuple:
        device = comfy.model_management.get_torch_device()
        n, h, w, _ = images.shape
        # the network, two padded frames and its activations (about 100 frame-sized maps at the
        # finest level) per in-between: the Wan models make room, as ImageUpscaleWithModel does
        weights = sum(p.numel() * p.element_size() for p in rife_model.parameters())
        comfy.model_management.free_memory(weights + 4 * 3 * h * w * 100 * max(multiplier - 1, 1), device)
        rife_model.to(device)
        bar = comfy.utils.ProgressBar(max(n - 1, 1))
        try:
            out = interpolate(rife_model, images, multiplier, device, step=lambda: bar.update(1))
        finally:
            rife_model.to("cpu")
        return (out,)


NODE_CLASS_MAPPINGS = {"WanWorkerLoadRIFE": LoadRIFE, "WanWorkerRIFEInterpolate": RIFEInterpolate}
NODE_DISPLAY_NAME_MAPPINGS = {"WanWorkerLoadRIFE": "Load RIFE Model (wan-worker)",
                              "WanWorkerRIFEInterpolate": "RIFE Frame Interpolation (wan-worker)"}
