"""The bundled graphs, one `GraphSpec` each: file, roles, progress phases, model set, the model's
defaults and sizes, the fields it cannot use, and how a job's values are written into it. Adding a
graph means adding a graph file to workflows/ and a spec here; the handler does not change.

The families' own inputs are read by each spec's `drive` hook: S2V's sound and Animate's videos
(wan_worker.drivers), a story's segments for the I2V, first-last-frame, T2V and 5B graphs
(wan_worker.segments, their segment block a `Repeat` like S2V's chunks).

Which graph a job runs (`spec_for`): model 14b with `video` is Animate, with `audio` sound-to-video (S2V), with `image`
I2V (with `end_image` first-last-frame), without `image` text-to-video; model 5b is one graph for
both, its start image optional.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .drivers import ANIMATE_FPS, animate_models, drive_animate, drive_sound
from .segments import Segment, drive_segments
from .workflow import Graph, GraphSpec, Repeat, Workflow

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
    audio_name: str | None = None  # sound-to-video: the uploaded audio file
    audio_start_s: float = 0.0  # where in the file the part the video covers starts
    audio_s: float = 0.0  # how long that part lasts
    # Animate: the uploaded control videos (pose, face; background and mask for replace), the driving
    # video (None when it has no sound: only its sound is read from it), the mode, the relight LoRA
    video_names: Mapping[str, str] = field(default_factory=dict)  # role -> uploaded file name
    mode: str = "move"
    relight: bool = False
    segments: tuple[Segment, ...] = ()  # a story (wan_worker.segments): one part each; () = one plain part


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
    has_experts: bool = True  # two experts (switch_step, user LoRAs)
    fast_lora: bool = True  # `fast` applies a LightX2V 4-step LoRA at `lora_strength`
    # job field -> why it cannot differ from `defaults` (S2V's fps: the model's audio features are 16 fps)
    fixed: Mapping[str, str] = field(default_factory=dict)


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
    fast_lora=False,
)
# The official video_wan2_2_14B_s2v template: 640x640, 16 fps, uni_pc/simple, shift 8; 4 steps at
# cfg 1 with the T2V high-noise 4-step LoRA (fast), 20 steps at cfg 6 without. One model, no experts.
# The length is not a job's: the audio decides it (chunks of the graph's length, see s2v_timing).
WAN14B_S2V = VideoModel(
    name="14b",
    defaults={"steps": 4, "cfg": 1.0, "shift": 8.0, "fps": 16.0, "sampler": "uni_pc", "scheduler": "simple"},
    quality={"steps": 20, "cfg": 6.0},
    size_step=16,
    areas={"480p": 640 * 640, "720p": 1280 * 720},
    sizes=WAN14B.sizes,
    resolution="480p",
    has_experts=False,
    fixed={"fps": "must be 16 for sound-to-video: the S2V model reads the sound's features at 16 video "
                  "frames a second, so another rate would put the motion out of step with the sound; "
                  "remove `fps`"},
)
# The official video_wan2_2_14B_animate template: KSampler euler/simple, 6 steps at cfg 1 with the
# LightX2V I2V distill LoRA (fast), shift 8, 16 fps; 20 steps without the LoRA (quality). One model.
# The length is not a job's: the driving video decides it (windows, see animate_timing).
WAN14B_ANIMATE = VideoModel(
    name="14b",
    defaults={"steps": 6, "cfg": 1.0, "shift": 8.0, "fps": 16.0, "sampler": "euler", "scheduler": "simple"},
    quality={"steps": 20},
    size_step=16,
    areas=WAN14B.areas,
    sizes=WAN14B.sizes,
    resolution="480p",
    has_experts=False,
    fixed={"fps": "must be 16 for Animate: the model makes 16 frames a second and the driving video is "
                  "resampled to 16 fps; remove `fps`"},
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


def apply_text_and_output(wf: Workflow, g: Graph, p: VideoParams) -> None:
    """What every bundled graph takes: prompts, fps, output prefix."""
    for inputs in wf.shared(g, "Positive Prompt"):
        inputs["text"] = p.prompt
    if p.negative_prompt is not None:
        for inputs in wf.shared(g, "Negative Prompt"):
            inputs["text"] = p.negative_prompt
    wf.inputs(g, "Create Video")["fps"] = p.fps
    wf.inputs(g, "Save Video")["filename_prefix"] = p.filename_prefix


def apply_common(wf: Workflow, g: Graph, p: VideoParams, video_role: str) -> None:
    """Prompts, fps and output prefix, and the size and length on the graph's latent node."""
    apply_text_and_output(wf, g, p)
    for inputs in wf.shared(g, video_role):
        inputs.update(width=p.width, height=p.height)
    wf.inputs(g, video_role)["length"] = p.length


def apply_wan22(wf: Workflow, g: Graph, p: VideoParams, video_role: str) -> None:
    """The values every Wan2.2 two-expert graph takes; `video_role` is its latent/conditioning node."""
    apply_common(wf, g, p, video_role)
    for role in ("High Noise Shift", "Low Noise Shift"):
        for inputs in wf.shared(g, role):
            inputs["shift"] = p.shift
    for role in ("High Noise LoRA", "Low Noise LoRA"):
        wf.inputs(g, role)["strength_model"] = p.lora_strength
    for role, start, end in (("High Noise Sampler", 0, p.switch_step),
                             ("Low Noise Sampler", p.switch_step, p.steps)):
        for inputs in wf.shared(g, role):
            inputs.update(noise_seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
                          scheduler=p.scheduler, start_at_step=start, end_at_step=end)


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
    for inputs in wf.shared(g, "Sampler"):
        inputs.update(seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler, scheduler=p.scheduler)
    if p.image_name is None:
        del g[wf.roles["Start Image"]]
        del wf.inputs(g, "Video Latent")["start_image"]
    else:
        wf.inputs(g, "Start Image")["image"] = p.image_name


def apply_s2v(wf: Workflow, g: Graph, p: Any) -> None:
    """Sound-to-video: the reference image, the part of the audio the video covers (Trim Audio feeds
    both the audio encoder and the MP4's sound), one sampler per chunk, and the decoded frames cut
    back to the audio's length. Chunk length and count are the graph's and the job's parts, not set here."""
    apply_text_and_output(wf, g, p)
    wf.inputs(g, "Sound To Video").update(width=p.width, height=p.height)
    wf.inputs(g, "Reference Image")["image"] = p.image_name
    wf.inputs(g, "Audio")["audio"] = p.audio_name
    wf.inputs(g, "Trim Audio").update(start_index=p.audio_start_s, duration=p.audio_s)
    wf.inputs(g, "Shift")["shift"] = p.shift
    wf.inputs(g, "LoRA")["strength_model"] = p.lora_strength
    for role in ("Sampler", "Extend Sampler"):
        wf.inputs(g, role).update(seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
                                  scheduler=p.scheduler)
    wf.inputs(g, "Cut To Audio")["length"] = p.length


def apply_animate(wf: Workflow, g: Graph, p: Any) -> None:
    """Animate: the character image (also seen by CLIP vision H), the pose and face videos, for
    replace the background video and the character mask (move mode removes those nodes and inputs:
    WanAnimateToVideo's are optional), one sampler per window, the frames cut to the driving video's
    length, its sound in the MP4 (removed when it has none)."""
    apply_text_and_output(wf, g, p)
    wf.inputs(g, "Character Image")["image"] = p.image_name
    wf.inputs(g, "Shift")["shift"] = p.shift
    wf.inputs(g, "LoRA")["strength_model"] = p.lora_strength
    wf.inputs(g, "Relight LoRA")["strength_model"] = 1.0 if p.relight else 0.0
    for role in ANIMATE_STEPS:
        wf.inputs(g, role).update(width=p.width, height=p.height)
    for role in ("Sampler", "Extend Sampler"):
        wf.inputs(g, role).update(seed=p.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
                                  scheduler=p.scheduler)
    for role, name in p.video_names.items():
        wf.inputs(g, role)["file"] = name
    if p.mode == "move":
        for role in ("Background Video", "Background Frames", "Mask Video", "Mask Frames", "Character Mask"):
            del g[wf.roles[role]]
        for role in ANIMATE_STEPS:
            for key in ("background_video", "character_mask"):
                del wf.inputs(g, role)[key]
    if "Driving Video" not in p.video_names:
        for role in ("Driving Video", "Driving Components"):
            del g[wf.roles[role]]
        del wf.inputs(g, "Create Video")["audio"]
    wf.inputs(g, "Cut To Video")["length"] = p.length


def apply_segment(wf: Workflow, g: Graph, p: Any, part: int) -> None:
    """A story's part `part` (wan_worker.segments): its own prompts, seed and length. The values all
    parts share (size, steps, shift) were written by the graph's `apply`; without `segments` the
    job is one plain part and `apply` wrote it all."""
    if not p.segments:
        return
    seg = p.segments[part - 1]
    wf.part_inputs(g, "Segment Prompt", part)["text"] = seg.prompt
    if seg.negative_prompt is not None:
        wf.part_inputs(g, "Segment Negative", part)["text"] = seg.negative_prompt
    seed_key = "noise_seed" if "Segment High Sampler" in wf.roles else "seed"
    for role in ("Segment High Sampler", "Segment Low Sampler", "Segment Sampler"):
        if role in wf.roles:
            wf.part_inputs(g, role, part)[seed_key] = seg.seed
    length_role = next(r for r in ("Segment Image To Video", "Segment Video Latent", "Segment Empty Latent")
                       if r in wf.roles)
    if length_role == "Segment Empty Latent" and part > 1:
        # T2V: the held start latent is one latent frame, the empty latent the other (length - 1) / 4
        wf.part_inputs(g, length_role, part)["length"] = seg.length - 4
        wf.part_inputs(g, "Segment Free Frames", part)["amount"] = (seg.length - 1) // 4
    else:
        wf.part_inputs(g, length_role, part)["length"] = seg.length


ANIMATE_STEPS = ("Animate", "Extend Animate")
S2V_FPS = 16
MAX_FRAMES = 4096  # ImageFromBatch's largest `length`


def chunk_frames(chunk_length: int) -> int:
    """Frames one S2V chunk adds: WanSoundImageToVideo makes (length - 1) // 4 + 1 latent frames
    and reads 4 audio-feature frames per latent frame (77 -> 20 latent frames -> 80 frames)."""
    return 4 * ((chunk_length - 1) // 4 + 1)


def s2v_timing(wf: Workflow, seconds: float) -> tuple[int, int]:
    """(frames, chunks) for `seconds` of sound: the frames at 16 fps, rounded up to whole chunks of
    the graph's chunk lengths (the first chunk's, then the extend block's); the decoded video (the
    chunks' frames, after the doubled first frame is dropped) is then cut back to the frames.
    Raises ValueError past ImageFromBatch's limit."""
    frames = max(1, math.ceil(round(seconds * S2V_FPS, 6)))
    if frames > MAX_FRAMES:
        raise ValueError(f"{seconds:g} s of sound is {frames} frames at {S2V_FPS} fps, more than the "
                         f"{MAX_FRAMES} one video can hold")
    first = chunk_frames(int(wf.default("Sound To Video", "length")))
    more = chunk_frames(int(wf.default("Extend", "length")))
    return frames, 1 + math.ceil(max(0, frames - first) / more)


MAX_VIDEO_FRAMES = MAX_FRAMES


def window_frames(wf: Workflow) -> tuple[int, int]:
    """(frames of the first window, frames each further window adds). WanAnimateToVideo makes
    `length` frames; an extend window starts with the last `continue_motion_max_frames` frames of
    the one before (rounded to whole latent frames: 5 -> 2 latent frames -> 5 images) and drops
    them after decoding (trim_image), so it adds length - 5 (77 -> 72)."""
    first = int(wf.default("Animate", "length"))
    motion = int(wf.default("Extend Animate", "continue_motion_max_frames"))
    kept = max(0, ((motion - 1) // 4 + 1) * 4 - 3)
    return first, int(wf.default("Extend Animate", "length")) - kept


def animate_timing(wf: Workflow, seconds: float) -> tuple[int, int]:
    """(frames, windows) for `seconds` of driving video: its frames at 16 fps, in the first window
    and as many extend windows as the rest needs; the decoded frames are cut back to the frames."""
    frames = max(1, round(seconds * ANIMATE_FPS))
    if frames > MAX_VIDEO_FRAMES:
        raise ValueError(f"{seconds:g} s of video is {frames} frames at {ANIMATE_FPS} fps, more than the "
                         f"{MAX_VIDEO_FRAMES} one video can hold")
    first, more = window_frames(wf)
    return frames, 1 + math.ceil(max(0, frames - first) / more)


NO_END_IMAGE_T2V = ("needs `image` too: first-last-frame starts from `image` and ends at `end_image`; "
                    "send both, or neither for text-to-video")
ONE_MODEL = "is for the 14b model's two experts; the 5b model is one model and has no {what}: remove it"
NO_AUDIO = "picks the part of `audio` a sound-to-video job covers; send `audio` too, or remove it"
AUDIO_ONLY = {"audio_start_s": NO_AUDIO, "duration_s": NO_AUDIO}
NO_VIDEO = ("is for Animate, which needs `video` (the driving video) and `image` (the character): send both, "
            "or remove it")
ANIMATE_FIELDS = ("mode", "pose_video", "face_video", "background_video", "mask_video", "relight", "person",
                  "return_preprocessed")
ANIMATE_ONLY = {name: NO_VIDEO for name in ANIMATE_FIELDS}

# A story's segment block (wan_worker.segments): the previous segment's latent decoded and its last
# frame taken, the segment's own prompts, sampling from that frame, and its latent (less the start
# frame's) joined to the video so far; the graph's Decode reads the join.
SEGMENT_ROLES = {"Segment Previous Frames": "VAEDecode", "Segment Start Frame": "ImageFromBatch",
                 "Segment Prompt": "CLIPTextEncode", "Segment Negative": "CLIPTextEncode",
                 "Segment New Latent": "LatentCut", "Segment Join": "LatentConcat"}
SEGMENT_TWINS = {"Segment Prompt": "Positive Prompt", "Segment Negative": "Negative Prompt"}
WAN22_SEGMENT_ROLES = {**SEGMENT_ROLES, "Segment High Shift": "ModelSamplingSD3",
                       "Segment Low Shift": "ModelSamplingSD3", "Segment High Sampler": "KSamplerAdvanced",
                       "Segment Low Sampler": "KSamplerAdvanced"}
WAN22_SEGMENT_TWINS = {**SEGMENT_TWINS, "Segment High Shift": "High Noise Shift",
                       "Segment Low Shift": "Low Noise Shift",
                       "Segment High Sampler": "High Noise Sampler",
                       "Segment Low Sampler": "Low Noise Sampler"}
WAN22_SEGMENT_PHASES = {**WAN22_PHASES, "Segment High Sampler": "sampling_high", "Segment Low Sampler": "sampling_low"}
# T2V's start frame: the T2V model has no image input, so a segment's first latent frame is held at
# the start frame's latent while the rest is sampled (a noise mask, as the 5B graph's image latent has)
T2V_SEGMENT_ROLES = {**WAN22_SEGMENT_ROLES, "Segment Start Latent": "VAEEncode",
                     "Segment Empty Latent": "EmptyHunyuanLatentVideo", "Segment Latent Frames": "LatentConcat",
                     "Segment Hold": "SolidMask", "Segment Free": "SolidMask", "Segment Hold Image": "MaskToImage",
                     "Segment Free Image": "MaskToImage", "Segment Free Frames": "RepeatImageBatch",
                     "Segment Mask Frames": "ImageBatch", "Segment Mask": "ImageToMask",
                     "Segment Masked Latent": "SetLatentNoiseMask"}


def segment_repeat(roles: Mapping[str, str], twins: Mapping[str, str], last: str,
                   **more: Any) -> Repeat:
    """The segment block over `roles`; `last` is the role whose latent part 1 ends with."""
    sampler = next(b for b, t in twins.items() if t == last)
    return Repeat(block=tuple(roles), feeds={last: "Segment Join"}, unit="segment",
                  reads={("Segment Previous Frames", "samples"): sampler}, twins=twins, optional=True, **more)


WAN22_LORA_INTO = {"high": "Segment High Shift", "low": "Segment Low Shift"}

I2V = GraphSpec(
    name="i2v", file="wan22_i2v.json",
    roles={**WAN22_ROLES, "Start Image": "LoadImage", "Image To Video": "WanImageToVideo",
           **WAN22_SEGMENT_ROLES, "Segment Image To Video": "WanImageToVideo"},
    phases=WAN22_SEGMENT_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_i2v,
    model_set="i2v-14b", video_model=WAN14B, refuses={**AUDIO_ONLY, **ANIMATE_ONLY},
    repeat=segment_repeat({**WAN22_SEGMENT_ROLES, "Segment Image To Video": "WanImageToVideo"},
                          {**WAN22_SEGMENT_TWINS, "Segment Image To Video": "Image To Video"}, "Low Noise Sampler",
                          lora_into=WAN22_LORA_INTO),
    drive=drive_segments, apply_part=apply_segment,
)
FLF2V = GraphSpec(
    name="flf2v", file="wan22_flf2v.json",
    roles={**WAN22_ROLES, "Start Image": "LoadImage", "End Image": "LoadImage",
           "First Last Frame To Video": "WanFirstLastFrameToVideo",
           **WAN22_SEGMENT_ROLES, "Segment Image To Video": "WanFirstLastFrameToVideo"},
    phases=WAN22_SEGMENT_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_flf2v,
    model_set="i2v-14b", video_model=WAN14B, refuses={**AUDIO_ONLY, **ANIMATE_ONLY},
    # `end_image` ends the last segment: only the last part keeps its link
    repeat=segment_repeat({**WAN22_SEGMENT_ROLES, "Segment Image To Video": "WanFirstLastFrameToVideo"},
                          {**WAN22_SEGMENT_TWINS, "Segment Image To Video": "First Last Frame To Video"},
                          "Low Noise Sampler", lora_into=WAN22_LORA_INTO,
                          last_only=(("Segment Image To Video", "end_image"),)),
    drive=drive_segments, apply_part=apply_segment,
)
T2V = GraphSpec(
    name="t2v", file="wan22_t2v.json",
    roles={**WAN22_ROLES, "Empty Latent": "EmptyHunyuanLatentVideo", **T2V_SEGMENT_ROLES},
    phases=WAN22_SEGMENT_PHASES, model_inputs=WAN22_MODELS, lora_after=WAN22_LORA_AFTER, apply=apply_t2v,
    model_set="t2v-14b", video_model=WAN14B, refuses={"end_image": NO_END_IMAGE_T2V, **AUDIO_ONLY, **ANIMATE_ONLY},
    repeat=segment_repeat(T2V_SEGMENT_ROLES, {**WAN22_SEGMENT_TWINS, "Segment Empty Latent": "Empty Latent"},
                          "Low Noise Sampler", lora_into=WAN22_LORA_INTO),
    drive=drive_segments, apply_part=apply_segment,
)
TI2V5B_SEGMENT_ROLES = {**SEGMENT_ROLES, "Segment Video Latent": "Wan22ImageToVideoLatent",
                        "Segment Sampler": "KSampler"}
TI2V5B = GraphSpec(
    name="ti2v5b", file="wan22_ti2v_5b.json",
    roles={"Model": "UNETLoader", "Shift": "ModelSamplingSD3", "Text Encoder": "CLIPLoader",
           "Positive Prompt": "CLIPTextEncode", "Negative Prompt": "CLIPTextEncode", "VAE": "VAELoader",
           "Start Image": "LoadImage", "Video Latent": "Wan22ImageToVideoLatent", "Sampler": "KSampler",
           "Decode": "VAEDecode", "Create Video": "CreateVideo", "Save Video": "SaveVideo",
           **TI2V5B_SEGMENT_ROLES},
    phases={"Sampler": "sampling", "Segment Sampler": "sampling", "Decode": "decoding", "Create Video": "encoding",
            "Save Video": "encoding"},
    model_inputs=(("Model", "unet_name"), ("Text Encoder", "clip_name"), ("VAE", "vae_name")),
    lora_after={}, apply=apply_ti2v5b, model_set="ti2v-5b", video_model=WAN5B,
    repeat=segment_repeat(TI2V5B_SEGMENT_ROLES, {**SEGMENT_TWINS, "Segment Video Latent": "Video Latent",
                                                 "Segment Sampler": "Sampler"}, "Sampler"),
    drive=drive_segments, apply_part=apply_segment,
    refuses={
        "end_image": "is for the 14b model (first-last-frame); the 5b model takes one optional `image`: "
                     "remove `end_image` or send `\"model\": \"14b\"`",
        "fast": ONE_MODEL.format(what="4-step LoRAs (its defaults are already the official template's)"),
        "lora_strength": ONE_MODEL.format(what="LightX2V LoRAs"),
        "switch_step": ONE_MODEL.format(what="expert switch"),
        "loras": "are supported on the 14b model only (the 5b model has another layout, so 14B LoRAs "
                 "do not fit it): remove `loras` or send `\"model\": \"14b\"`",
        "audio": "is for sound-to-video, which runs on the 14b model (S2V); the 5b model has none: remove "
                 "`audio` or send `\"model\": \"14b\"`",
        "video": "is for Animate, which runs on the 14b model; the 5b model has none: remove `video` or send "
                 "`\"model\": \"14b\"`",
        **AUDIO_ONLY, **ANIMATE_ONLY,
    },
)
# Sound-to-video: the first chunk, then the "Video S2V Extend" block of the official template
# (WanSoundImageToVideoExtend + KSampler + LatentConcat) once per further chunk (workflow.Repeat).
S2V = GraphSpec(
    name="s2v", file="wan22_s2v.json",
    roles={"Model": "UNETLoader", "LoRA": "LoraLoaderModelOnly", "Shift": "ModelSamplingSD3",
           "Text Encoder": "CLIPLoader", "Positive Prompt": "CLIPTextEncode", "Negative Prompt": "CLIPTextEncode",
           "VAE": "VAELoader", "Audio Encoder": "AudioEncoderLoader", "Audio": "LoadAudio",
           "Trim Audio": "TrimAudioDuration", "Audio Features": "AudioEncoderEncode",
           "Reference Image": "LoadImage", "Sound To Video": "WanSoundImageToVideo", "Sampler": "KSampler",
           "Extend": "WanSoundImageToVideoExtend", "Extend Sampler": "KSampler", "Extend Concat": "LatentConcat",
           "First Frame": "LatentCut", "Double First Frame": "LatentConcat", "Decode": "VAEDecode",
           "Cut To Audio": "ImageFromBatch", "Create Video": "CreateVideo", "Save Video": "SaveVideo"},
    phases={"Sampler": "sampling", "Extend Sampler": "sampling", "Decode": "decoding", "Create Video": "encoding",
            "Save Video": "encoding"},
    model_inputs=(("Model", "unet_name"), ("LoRA", "lora_name"), ("Text Encoder", "clip_name"), ("VAE", "vae_name"),
                  ("Audio Encoder", "audio_encoder_name")),
    lora_after={}, apply=apply_s2v, model_set="s2v-14b", video_model=WAN14B_S2V,
    repeat=Repeat(block=("Extend", "Extend Sampler", "Extend Concat"), feeds={"Sampler": "Extend Concat"},
                  unit="chunk"),
    timing=s2v_timing, drive=drive_sound,
    refuses={
        "segments": "follows the sound in sound-to-video (the sound decides the video's length and parts): "
                    "remove `segments`, or send one job per part of the sound",
        "end_image": "is for first-last-frame; sound-to-video starts from `image` alone: remove `end_image`",
        "length": "follows the sound in sound-to-video (the video covers `audio`, or `duration_s` of it, at "
                  "16 fps): remove `length`",
        "switch_step": "is for the two experts of image- and text-to-video; the S2V model is one model: remove it",
        "loras": "are not supported for sound-to-video: LoRAs made for the I2V, T2V or 5B models do not fit "
                 "the S2V model; remove `loras`",
        **ANIMATE_ONLY,
    },
)
# Animate: the official template's "Video Sampling and output" subgraph (first window) and one
# "Video Extend" block (WanAnimateToVideo continuing from the frames before + KSampler +
# TrimVideoLatent + VAEDecode + ImageFromBatch + ImageBatch), repeated per further window. The
# pose, face, background and mask videos come in through core LoadVideo nodes.
ANIMATE = GraphSpec(
    name="animate", file="wan22_animate.json",
    roles={"Model": "UNETLoader", "LoRA": "LoraLoaderModelOnly", "Relight LoRA": "LoraLoaderModelOnly",
           "Shift": "ModelSamplingSD3", "Text Encoder": "CLIPLoader", "Positive Prompt": "CLIPTextEncode",
           "Negative Prompt": "CLIPTextEncode", "VAE": "VAELoader", "CLIP Vision": "CLIPVisionLoader",
           "Character Image": "LoadImage", "Character Vision": "CLIPVisionEncode",
           "Driving Video": "LoadVideo", "Driving Components": "GetVideoComponents",
           "Pose Video": "LoadVideo", "Pose Frames": "GetVideoComponents",
           "Face Video": "LoadVideo", "Face Frames": "GetVideoComponents",
           "Background Video": "LoadVideo", "Background Frames": "GetVideoComponents",
           "Mask Video": "LoadVideo", "Mask Frames": "GetVideoComponents", "Character Mask": "ImageToMask",
           "Animate": "WanAnimateToVideo", "Sampler": "KSampler", "Trim Latent": "TrimVideoLatent",
           "Decode": "VAEDecode", "Images": "ImageFromBatch",
           "Extend Animate": "WanAnimateToVideo", "Extend Sampler": "KSampler",
           "Extend Trim Latent": "TrimVideoLatent", "Extend Decode": "VAEDecode",
           "Extend New Images": "ImageFromBatch", "Extend Images": "ImageBatch",
           "Cut To Video": "ImageFromBatch", "Create Video": "CreateVideo", "Save Video": "SaveVideo"},
    # each window decodes its frames before the next one samples: decoding stays inside a window's
    # "sampling" (the decoding band comes after sampling's and percent never goes back)
    phases={"Sampler": "sampling", "Extend Sampler": "sampling", "Create Video": "encoding",
            "Save Video": "encoding"},
    model_inputs=(("Model", "unet_name"), ("LoRA", "lora_name"), ("Relight LoRA", "lora_name"),
                  ("Text Encoder", "clip_name"), ("VAE", "vae_name"), ("CLIP Vision", "clip_name")),
    lora_after={"high": "Relight LoRA"}, apply=apply_animate, model_set="animate-14b",
    video_model=WAN14B_ANIMATE,
    repeat=Repeat(block=("Extend Animate", "Extend Sampler", "Extend Trim Latent", "Extend Decode",
                         "Extend New Images", "Extend Images"),
                  feeds={"Images": "Extend Images", "Animate": "Extend Animate"}, unit="window"),
    timing=animate_timing, drive=drive_animate, job_models=animate_models,
    refuses={
        "segments": "follows the driving video in Animate (its length decides the video's): remove "
                    "`segments`, or send one job per part of the driving video",
        "end_image": "is for first-last-frame; Animate starts from `image` (the character) alone: remove it",
        "length": "follows the driving video in Animate (its frames at 16 fps): remove `length`",
        "switch_step": "is for the two experts of image- and text-to-video; the Animate model is one model: "
                       "remove it",
        "audio": "is for sound-to-video; Animate carries the driving video's own sound: remove `audio`",
        **AUDIO_ONLY,
    },
)
GRAPHS: tuple[GraphSpec, ...] = (I2V, FLF2V, T2V, TI2V5B, S2V, ANIMATE)


def spec_for(model: str = "14b", has_image: bool = True, has_end_image: bool = False,
             has_audio: bool = False, has_video: bool = False) -> GraphSpec:
    """Which bundled graph a video job runs."""
    if model == WAN5B.name:
        return TI2V5B
    if has_video:
        return ANIMATE
    if has_audio:
        return S2V
    if not has_image:
        return T2V
    return FLF2V if has_end_image else I2V

