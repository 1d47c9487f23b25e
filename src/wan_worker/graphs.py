"""The bundled graphs, one `GraphSpec` each: file, roles, progress phases, model set, the model's
defaults and sizes, the fields it cannot use, and how a job's values are written into it. Adding a
graph means adding a graph file to workflows/ and a spec here; the handler does not change.

Which graph a job runs (`spec_for`): model 14b with `image` is I2V (with `end_image`
first-last-frame), without `image` text-to-video; model 5b is one graph for both, its start image
optional.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .workflow import Graph, GraphSpec, Workflow

Size = tuple[int, int]
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")


@dataclass(frozen=True)
class VideoParams:
    """Every value a job sets in a bundled Wan2.2 graph, already validated and resolved."""

    image_name: str | None  # None: text-to-video (no start image)
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
    lora_strength: float  # the LightX2V LoRAs; 0 turns them off (quality mode); unused by 5B
    switch_step: int  # unused by 5B (one model)
    sampler: str
    scheduler: str
    filename_prefix: str
    end_image_name: str | None = None  # first-last-frame graphs only
    parts: int = 1  # graphs with a repeated block (workflow.Repeat): how many parts the job runs


@dataclass(frozen=True)
class VideoModel:
    """What a model brings to every graph that runs it: the defaults a job starts from, its sizes.

    `defaults` are the official template's values (fast mode for 14B: the LightX2V 4-step LoRAs);
    `quality` overrides them when `fast` is false. Without an image the size comes from
    `sizes[resolution][aspect_ratio]`; with one it follows the image at about `areas[resolution]`
    pixels, rounded to multiples of `size_step` (what the latent node accepts).
    """

    name: str  # the job's `model`
    defaults: Mapping[str, Any]
    quality: Mapping[str, Any]
    size_step: int
    areas: Mapping[str, int]  # resolution -> pixel area
    sizes: Mapping[str, Mapping[str, Size]]  # resolution -> aspect ratio -> (width, height)
    resolution: str  # the default resolution
    has_experts: bool = True  # two experts (switch_step, LightX2V LoRAs, user LoRAs)


WAN14B = VideoModel(
    name="14b",
    defaults={"steps": 4, "cfg": 1.0, "shift": 5.0, "fps": 16.0, "length": 81, "sampler": "euler",
              "scheduler": "simple"},
    quality={"steps": 20, "cfg": 3.5, "shift": 8.0},
    size_step=16,
    areas={"480p": 832 * 480, "720p": 1280 * 720},
    # exact ratios where multiples of 16 allow; areas near the preset's
    sizes={"480p": {"16:9": (832, 480), "9:16": (480, 832), "1:1": (640, 640), "4:3": (704, 528),
                    "3:4": (528, 704)},
           "720p": {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960), "4:3": (1088, 816),
                    "3:4": (816, 1088)}},
    resolution="480p",
)
# The official video_wan2_2_5B_ti2v template: 1280x704, 121 frames at 24 fps, 20 uni_pc steps, cfg 5,
# shift 8. Its VAE compresses 16x spatially and the model patches 2x2 more: sides are multiples of 32.
WAN5B = VideoModel(
    name="5b",
    defaults={"steps": 20, "cfg": 5.0, "shift": 8.0, "fps": 24.0, "length": 121, "sampler": "uni_pc",
              "scheduler": "simple"},
    quality={},
    size_step=32,
    areas={"720p": 1280 * 704},
    sizes={"720p": {"16:9": (1280, 704), "9:16": (704, 1280), "1:1": (960, 960), "4:3": (1152, 864),
                    "3:4": (864, 1152)}},
    resolution="720p",
    has_experts=False,
)
VIDEO_MODELS = {m.name: m for m in (WAN14B, WAN5B)}


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


def apply_common(wf: Workflow, g: Graph, p: VideoParams, video_role: str) -> None:
    """What every bundled graph takes: prompts, size and length, fps, shift, output prefix."""
    wf.inputs(g, "Positive Prompt")["text"] = p.prompt
    if p.negative_prompt is not None:
        wf.inputs(g, "Negative Prompt")["text"] = p.negative_prompt
    wf.inputs(g, video_role).update(width=p.width, height=p.height, length=p.length)
    wf.inputs(g, "Create Video")["fps"] = p.fps
    wf.inputs(g, "Save Video")["filename_prefix"] = p.filename_prefix


def apply_wan22(wf: Workflow, g: Graph, p: VideoParams, video_role: str) -> None:
    """The values every Wan2.2 two-expert graph takes; `video_role` is its latent/conditioning node."""
    apply_common(wf, g, p, video_role)
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


def apply_i2v(wf: Workflow, g: Graph, p: Any) -> None:
    apply_wan22(wf, g, p, "Image To Video")
    wf.inputs(g, "Start Image")["image"] = p.image_name


def apply_flf2v(wf: Workflow, g: Graph, p: Any) -> None:
    """WanFirstLastFrameToVideo scales the end image to cover the video size and center-crops it."""
    apply_wan22(wf, g, p, "First Last Frame To Video")
    wf.inputs(g, "Start Image")["image"] = p.image_name
    wf.inputs(g, "End Image")["image"] = p.end_image_name


def apply_t2v(wf: Workflow, g: Graph, p: Any) -> None:
    """Text only: an empty video latent, the prompts' conditioning straight into both samplers."""
    apply_wan22(wf, g, p, "Empty Latent")


def apply_ti2v5b(wf: Workflow, g: Graph, p: Any) -> None:
    """One model, one KSampler. Without an image the Start Image node and its link are removed:
    Wan22ImageToVideoLatent's start_image is optional, and then it is plain text-to-video."""
    apply_common(wf, g, p, "Video Latent")
    wf.inputs(g, "Shift")["shift"] = p.shift
    wf.inputs(g, "Sampler").update(seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
                                   scheduler=p.scheduler)
    if p.image_name is None:
        del g[wf.roles["Start Image"]]
        del wf.inputs(g, "Video Latent")["start_image"]
    else:
        wf.inputs(g, "Start Image")["image"] = p.image_name


NO_END_IMAGE_T2V = ("needs `image` too: first-last-frame starts from `image` and ends at `end_image`; "
                    "send both, or neither for text-to-video")
ONE_MODEL = "is for the 14b model's two experts; the 5b model is one model and has no {what}: remove it"

I2V = GraphSpec(
    name="i2v", file="wan22_i2v.json",
    roles={**WAN22_ROLES, "Start Image": "LoadImage", "Image To Video": "WanImageToVideo"},
    phases=WAN22_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_i2v,
    model_set="i2v-14b", video_model=WAN14B,
)
FLF2V = GraphSpec(
    name="flf2v", file="wan22_flf2v.json",
    roles={**WAN22_ROLES, "Start Image": "LoadImage", "End Image": "LoadImage",
           "First Last Frame To Video": "WanFirstLastFrameToVideo"},
    phases=WAN22_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_flf2v,
    model_set="i2v-14b", video_model=WAN14B,
)
T2V = GraphSpec(
    name="t2v", file="wan22_t2v.json",
    roles={**WAN22_ROLES, "Empty Latent": "EmptyHunyuanLatentVideo"},
    phases=WAN22_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_t2v,
    model_set="t2v-14b", video_model=WAN14B, refuses={"end_image": NO_END_IMAGE_T2V},
)
TI2V5B = GraphSpec(
    name="ti2v5b", file="wan22_ti2v_5b.json",
    roles={"Model": "UNETLoader", "Shift": "ModelSamplingSD3", "Text Encoder": "CLIPLoader",
           "Positive Prompt": "CLIPTextEncode", "Negative Prompt": "CLIPTextEncode", "VAE": "VAELoader",
           "Start Image": "LoadImage", "Video Latent": "Wan22ImageToVideoLatent", "Sampler": "KSampler",
           "Decode": "VAEDecode", "Create Video": "CreateVideo", "Save Video": "SaveVideo"},
    phases={"Sampler": "sampling", "Decode": "decoding", "Create Video": "encoding", "Save Video": "encoding"},
    model_inputs=(("Model", "unet_name"), ("Text Encoder", "clip_name"), ("VAE", "vae_name")),
    lora_after={}, apply=apply_ti2v5b, model_set="ti2v-5b", video_model=WAN5B,
    refuses={
        "end_image": "is for the 14b model (first-last-frame); the 5b model takes one optional `image`: "
                     "remove `end_image` or send `\"model\": \"14b\"`",
        "fast": ONE_MODEL.format(what="4-step LoRAs (its defaults are already the official template's)"),
        "lora_strength": ONE_MODEL.format(what="LightX2V LoRAs"),
        "switch_step": ONE_MODEL.format(what="expert switch"),
        "loras": "are supported on the 14b model only (the 5b model has another layout, so 14B LoRAs "
                 "do not fit it): remove `loras` or send `\"model\": \"14b\"`",
    },
)
GRAPHS: tuple[GraphSpec, ...] = (I2V, FLF2V, T2V, TI2V5B)


def spec_for(model: str = "14b", has_image: bool = True, has_end_image: bool = False) -> GraphSpec:
    """Which bundled graph a video job runs."""
    if model == WAN5B.name:
        return TI2V5B
    if not has_image:
        return T2V
    return FLF2V if has_end_image else I2V

