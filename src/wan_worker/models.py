"""The six model files of the Wan2.2 I2V workflow: the manifest, where ComfyUI looks, the check."""
from __future__ import annotations

from dataclasses import dataclass

WAN22_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
WAN21_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"

GB = 1000**3


@dataclass(frozen=True)
class ModelFile:
    """One file the bundled workflow loads: where ComfyUI expects it and where to get it."""

    name: str  # file name, as the workflow's loader node names it
    folder: str  # ComfyUI model folder: diffusion_models, loras, text_encoders, vae
    repo: str  # Hugging Face repository
    repo_path: str  # path of the file inside the repository
    approx_bytes: int  # for the docs and download estimates; the hub's size is authoritative
    role: str  # what it is, for reports and docs

    @property
    def rel_path(self) -> str:
        return f"{self.folder}/{self.name}"


def _wan(folder: str, name: str, approx_bytes: int, role: str) -> ModelFile:
    return ModelFile(name, folder, WAN22_REPO, f"split_files/{folder}/{name}", approx_bytes, role)


MANIFEST: tuple[ModelFile, ...] = (
    _wan("diffusion_models", "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
         "high-noise expert (first sampling steps)"),
    _wan("diffusion_models", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
         "low-noise expert (last sampling steps)"),
    _wan("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", int(1.23 * GB),
         "LightX2V 4-step LoRA for the high-noise expert"),
    _wan("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors", int(1.23 * GB),
         "LightX2V 4-step LoRA for the low-noise expert"),
    _wan("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", int(6.74 * GB),
         "UMT5-XXL text encoder"),
    _wan("vae", "wan_2.1_vae.safetensors", int(0.254 * GB), "Wan 2.1 VAE"),
)
