"""The bundled graphs, one `GraphSpec` each: file, roles, progress phases, model files, and how a
job's values are written into it. Adding a graph (text-to-video, the 5B model) means adding a
graph file to workflows/ and a spec here; the handler does not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .workflow import Graph, GraphSpec, Workflow


@dataclass(frozen=True)
class VideoParams:
    """Every value a job sets in a Wan2.2 two-expert graph, already validated and resolved."""

    image_name: str
    prompt: str
    negative_prompt: str | None  # None: keep the workflow's own negative prompt
    seed: int
    width: int
    height: int
    length: int
    fps: float
    steps: int
    cfg: float
    shift: float
    lora_strength: float  # the LightX2V LoRAs; 0 turns them off (quality mode)
    switch_step: int
    sampler: str
    scheduler: str
    filename_prefix: str
    end_image_name: str | None = None  # first-last-frame graphs only


# The roles every Wan2.2 14B two-expert graph has (node title -> class).
WAN22_ROLES: dict[str, str] = {
    "High Noise Model": "UNETLoader",
    "Low Noise Model": "UNETLoader",
    "High Noise LoRA": "LoraLoaderModelOnly",
    "Low Noise LoRA": "LoraLoaderModelOnly",
    "High Noise Shift": "ModelSamplingSD3",
    "Low Noise Shift": "ModelSamplingSD3",
    "Text Encoder": "CLIPLoader",
    "Positive Prompt": "CLIPTextEncode",
    "Negative Prompt": "CLIPTextEncode",
    "VAE": "VAELoader",
    "Start Image": "LoadImage",
    "High Noise Sampler": "KSamplerAdvanced",
    "Low Noise Sampler": "KSamplerAdvanced",
    "Decode": "VAEDecode",
    "Create Video": "CreateVideo",
    "Save Video": "SaveVideo",
}
WAN22_PHASES = {
    "High Noise Sampler": "sampling_high",
    "Low Noise Sampler": "sampling_low",
    "Decode": "decoding",
    "Create Video": "encoding",
    "Save Video": "encoding",
}
WAN22_MODELS = (("High Noise Model", "unet_name"), ("Low Noise Model", "unet_name"),
                ("High Noise LoRA", "lora_name"), ("Low Noise LoRA", "lora_name"),
                ("Text Encoder", "clip_name"), ("VAE", "vae_name"))
# User LoRAs follow the LightX2V LoRA of their expert (in quality mode that one has strength 0).
WAN22_LORA_AFTER = {"high": "High Noise LoRA", "low": "Low Noise LoRA"}


def apply_wan22(wf: Workflow, g: Graph, p: VideoParams, video_role: str) -> None:
    """The values every Wan2.2 two-expert graph takes; `video_role` is its latent/conditioning node."""
    wf.inputs(g, "Start Image")["image"] = p.image_name
    wf.inputs(g, "Positive Prompt")["text"] = p.prompt
    if p.negative_prompt is not None:
        wf.inputs(g, "Negative Prompt")["text"] = p.negative_prompt
    wf.inputs(g, video_role).update(width=p.width, height=p.height, length=p.length)
    wf.inputs(g, "Create Video")["fps"] = p.fps
    for role in ("High Noise Shift", "Low Noise Shift"):
        wf.inputs(g, role)["shift"] = p.shift
    for role in ("High Noise LoRA", "Low Noise LoRA"):
        wf.inputs(g, role)["strength_model"] = p.lora_strength
    for role, start, end in (("High Noise Sampler", 0, p.switch_step),
                             ("Low Noise Sampler", p.switch_step, p.steps)):
        wf.inputs(g, role).update(
            noise_seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
            scheduler=p.scheduler, start_at_step=start, end_at_step=end,
        )
    wf.inputs(g, "Save Video")["filename_prefix"] = p.filename_prefix


def apply_i2v(wf: Workflow, g: Graph, p: Any) -> None:
    apply_wan22(wf, g, p, "Image To Video")


def apply_flf2v(wf: Workflow, g: Graph, p: Any) -> None:
    """WanFirstLastFrameToVideo scales the end image to cover the video size and center-crops it."""
    apply_wan22(wf, g, p, "First Last Frame To Video")
    wf.inputs(g, "End Image")["image"] = p.end_image_name


I2V = GraphSpec(
    name="i2v", file="wan22_i2v.json",
    roles={**WAN22_ROLES, "Image To Video": "WanImageToVideo"},
    phases=WAN22_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_i2v,
)
FLF2V = GraphSpec(
    name="flf2v", file="wan22_flf2v.json",
    roles={**WAN22_ROLES, "End Image": "LoadImage", "First Last Frame To Video": "WanFirstLastFrameToVideo"},
    phases=WAN22_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_flf2v,
)
GRAPHS: tuple[GraphSpec, ...] = (I2V, FLF2V)


def spec_for(has_end_image: bool) -> GraphSpec:
    """Which bundled graph a video job runs."""
    return FLF2V if has_end_image else I2V
