"""Job input -> a typed request: a video job (image-to-video, first-last-frame, text-to-video,
sound-to-video, Animate; model 14b or 5b) or workflow mode (worker-comfyui compatible).

Pydantic does the checking (strict types, unknown fields refused) and every failure becomes one
INVALID_INPUT error that names the field. Values are never echoed back: an `image` field may hold
megabytes of base64.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import INVALID_INPUT, WorkerError, invalid
from .graphs import ASPECT_RATIOS, VideoModel, spec_for
from .workflow import GraphSpec

# What ComfyUI 0.3.64's KSamplerAdvanced accepts (its /object_info); anything else it would reject.
SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)

MAX_LORAS = 4
LORA_STRENGTH_LIMIT = 4.0
LORA_EXTENSIONS = (".safetensors", ".sft")
MIN_SIDE, MAX_SIDE = 128, 1920
MAX_PROMPT_CHARS = 5000
MAX_INTERPOLATED = 4  # frames made between each pair: factor 2-5 (the node's MAX_FACTOR)
UPSCALER_EXTENSIONS = (".pth", ".pt", ".safetensors")
SEED_LIMIT = 2**64

Output = Literal["auto", "base64", "s3"]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ ()-]{0,199}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Common(_Strict):
    output: Output = "auto"
    timeout_s: float | None = Field(default=None, gt=0)
    dry_run: bool = False


def _outside_folder(text: str) -> bool:
    """Whether a file name could leave the model folder it names a file of (absolute, `..`, a
    drive, a backslash, an empty part): LoRA and upscaler names share this guard."""
    parts = text.split("/")
    return text.startswith(("/", "~")) or "\\" in text or ".." in parts or "" in parts or ":" in text


def _lora_ref(v: str) -> str:
    """A LoRA is an https:// (or http://) URL or a plain relative name in the volume's loras folders."""
    text = v.strip()
    if not text:
        raise ValueError("must not be empty")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        if not text.lower().startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL or a file name in the volume's loras folders")
        return text
    if _outside_folder(text):
        raise ValueError("must be a file name relative to the volume's loras folders (subfolders allowed; "
                         "no '..', no absolute path) or an https:// URL")
    if not text.lower().endswith(LORA_EXTENSIONS):
        raise ValueError("must name a .safetensors file (the only LoRA format the worker can check)")
    return text


def _strength() -> Any:
    return Field(default=None, ge=-LORA_STRENGTH_LIMIT, le=LORA_STRENGTH_LIMIT)


class LoraEntry(_Strict):
    """One user LoRA: `name` (both experts at `strength`), or `high` and/or `low` files."""

    name: str | None = None
    strength: float | None = _strength()
    high: str | None = None
    low: str | None = None
    high_strength: float | None = _strength()
    low_strength: float | None = _strength()

    @field_validator("name", "high", "low")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        return None if v is None else _lora_ref(v)

    @model_validator(mode="after")
    def _one_form(self) -> "LoraEntry":
        split = (self.high, self.low, self.high_strength, self.low_strength)
        if self.name is not None and any(x is not None for x in split):
            raise ValueError("give either `name` (+ `strength`) or `high`/`low` (+ `high_strength`/"
                             "`low_strength`), not both")
        if self.name is None:
            if self.strength is not None:
                raise ValueError("`strength` goes with `name`; use `high_strength`/`low_strength` with "
                                 "`high`/`low`")
            if self.high is None and self.low is None:
                raise ValueError("needs `name`, or `high` and/or `low`")
            for side in ("high", "low"):
                if getattr(self, side) is None and getattr(self, f"{side}_strength") is not None:
                    raise ValueError(f"`{side}_strength` is set but `{side}` is not")
        return self

    def per_expert(self) -> list[tuple[str, str, float, str]]:
        """(expert, file, strength, key in the entry) for each expert the entry reaches."""
        if self.name is not None:
            strength = 1.0 if self.strength is None else self.strength
            return [("high", self.name, strength, "name"), ("low", self.name, strength, "name")]
        out = []
        for side in ("high", "low"):
            ref, strength = getattr(self, side), getattr(self, f"{side}_strength")
            if ref is not None:
                out.append((side, ref, 1.0 if strength is None else strength, side))
        return out


def _four_n_plus_one(v: int | None) -> int | None:
    if v is not None and (v - 1) % 4:
        raise ValueError(f"must be 4n+1 frames (e.g. 49, 81, 121); {(v - 1) // 4 * 4 + 1} is the nearest below")
    return v


def _not_blank(v: str | None) -> str | None:
    if v is not None and not v.strip():
        raise ValueError("must not be blank")
    return v


class SegmentEntry(_Strict):
    """One part of a story (`segments`): any field it leaves out is the job's (wan_worker.segments)."""

    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    length: int | None = Field(default=None, ge=5, le=241)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    loras: list[LoraEntry] | None = Field(default=None, max_length=MAX_LORAS)  # [] : none for this segment

    _prompt = field_validator("prompt")(_not_blank)
    _length = field_validator("length")(_four_n_plus_one)


class VideoRequest(_Common):
    """A video through a bundled Wan2.2 graph: `model` 14b (with `image` image-to-video, with
    `end_image` too first-last-frame, with `audio` sound-to-video, with `video` Animate, without
    `image` text-to-video) or
    5b (`image` optional). Defaults come from the graph's model (graphs.VideoModel); fields the
    chosen graph cannot use are refused by name (GraphSpec.refuses), never ignored."""

    model: Literal["14b", "5b"] = "14b"
    image: str | None = Field(default=None, min_length=1)
    end_image: str | None = Field(default=None, min_length=1)
    audio: str | None = Field(default=None, min_length=1)
    audio_start_s: float | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    video: str | None = Field(default=None, min_length=1)
    mode: Literal["move", "replace"] = "move"
    pose_video: str | None = Field(default=None, min_length=1)
    face_video: str | None = Field(default=None, min_length=1)
    background_video: str | None = Field(default=None, min_length=1)
    mask_video: str | None = Field(default=None, min_length=1)
    relight: bool | None = None
    person: int | None = Field(default=None, ge=0)  # Animate preprocessing: which person, by size (0 = largest)
    return_preprocessed: bool = False  # Animate preprocessing: return the pose and face videos it made
    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)  # required without segments
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=16)
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=16)
    length: int | None = Field(default=None, ge=5, le=241)
    fps: float | None = Field(default=None, ge=1, le=60)
    steps: int | None = Field(default=None, ge=2, le=100)
    cfg: float | None = Field(default=None, ge=0, le=30)
    shift: float | None = Field(default=None, ge=0, le=100)
    fast: bool = True
    lora_strength: float = Field(default=1.0, ge=0, le=4)
    switch_step: int | None = Field(default=None, ge=1)
    sampler: str | None = None
    scheduler: str | None = None
    resolution: Literal["480p", "720p"] | None = None
    aspect_ratio: Literal["16:9", "9:16", "1:1", "4:3", "3:4"] | None = None
    loras: list[LoraEntry] = Field(default_factory=list, max_length=MAX_LORAS)
    return_last_frame: bool = False
    segments: list[SegmentEntry] | None = Field(default=None, min_length=1)  # a story, part by part
    # post-processing in the job's graph (wan_worker.postprocess), named as fal's Wan APIs name them
    interpolator_model: Literal["rife", "none", "film"] | None = None
    num_interpolated_frames: int | None = Field(default=None, ge=0, le=MAX_INTERPOLATED)
    adjust_fps_for_interpolation: bool | None = None
    upscaler: str | None = None  # "default" or a file in the volume's upscale_models folders
    upscale_factor: float | None = Field(default=None, gt=1, le=4)

    _prompt = field_validator("prompt")(_not_blank)
    _length = field_validator("length")(_four_n_plus_one)

    @field_validator("upscaler")
    @classmethod
    def _upscaler_ref(cls, v: str | None) -> str | None:
        if v is None or v == "default":
            return v
        if not v.strip() or _outside_folder(v):
            raise ValueError("must be \"default\" or a file name relative to the volume's upscale_models "
                             "folders (subfolders allowed; no '..', no absolute path)")
        if not v.lower().endswith(UPSCALER_EXTENSIONS):
            raise ValueError(f"must name a {', '.join(UPSCALER_EXTENSIONS)} file (an ESRGAN-family model "
                             "ComfyUI loads with spandrel), or be \"default\"")
        return v

    @field_validator("sampler", "scheduler")
    @classmethod
    def _known_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        choices = SAMPLERS if info.field_name == "sampler" else SCHEDULERS
        if v is not None and v not in choices:
            raise ValueError(f"is not a {info.field_name} ComfyUI knows; use one of {', '.join(choices)}")
        return v

    @model_validator(mode="after")
    def _model_defaults(self) -> "VideoRequest":
        """Unset values from the model's defaults (14b fast mode: the LightX2V 4-step values)."""
        vm = self.video_model
        base = {**vm.defaults, **({} if self.fast else vm.quality)}
        for key, value in base.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.resolution is None:
            object.__setattr__(self, "resolution", vm.resolution)
        if self.switch_step is None:
            object.__setattr__(self, "switch_step", self.steps // 2)  # type: ignore[operator]
        return self

    @property
    def spec(self) -> GraphSpec:
        """The bundled graph this job runs."""
        return spec_for(self.model, self.image is not None, self.end_image is not None, self.audio is not None,
                        self.video is not None)

    @property
    def video_model(self) -> VideoModel:
        return self.spec.video_model  # type: ignore[no-any-return]

    @property
    def interpolation_factor(self) -> int:
        """Frames out per frame in: 1 + the frames RIFE makes between each pair (1 with
        `interpolator_model` alone: one frame between, as fal's rife)."""
        if self.interpolator_model == "none" or (self.interpolator_model is None and not self.num_interpolated_frames):
            return 1
        return 1 + (1 if self.num_interpolated_frames is None else self.num_interpolated_frames)

    @property
    def effective_lora_strength(self) -> float:
        """LightX2V LoRAs only belong to 14b's fast mode; quality mode (and 5b) runs without them."""
        return self.lora_strength if self.fast and self.video_model.fast_lora else 0.0


I2VRequest = VideoRequest  # its name before text-to-video and the 5B model


class WorkflowImage(_Strict):
    name: str
    image: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v) or ".." in v:
            raise ValueError("must be a plain file name (letters, digits, . _ - space), no folders")
        return v


class WorkflowRequest(_Common):
    """worker-comfyui's contract: any API-format graph plus the images it loads by name."""

    workflow: dict[str, Any]
    images: list[WorkflowImage] = Field(default_factory=list, max_length=32)

    @field_validator("workflow")
    @classmethod
    def _api_format(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "nodes" in v and "links" in v:
            raise ValueError("is in ComfyUI's UI format; export it with 'Export (API)' instead")
        if not v:
            raise ValueError("is empty")
        for node_id, node in v.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                    or not isinstance(node.get("inputs"), dict):
                raise ValueError(f"node {node_id!r} needs a class_type string and an inputs object")
        return v

    @field_validator("images")
    @classmethod
    def _unique(cls, v: list[WorkflowImage]) -> list[WorkflowImage]:
        names = [i.name for i in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names must be unique; repeated: {', '.join(dupes)}")
        return v


Request = Union[VideoRequest, WorkflowRequest]


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "input"


def _describe(err: dict[str, Any]) -> dict[str, str]:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    field = _field_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return {"field": field, "message": "is not a known field; remove it (see docs/job-contract.md)"}
    if kind == "missing":
        return {"field": field, "message": "is required"}
    msg = err["msg"].removeprefix("Value error, ").replace("Input should", "should", 1)
    return {"field": field, "message": msg[:1:].lower() + msg[1:]}


def parse_input(raw: Any, *, max_timeout_s: float, s3_configured: bool = False) -> Request:
    """Validate `job["input"]` (a dict, or a JSON string of one) into a request.

    `max_timeout_s` is the worker's JOB_TIMEOUT_S, which a job may lower but not raise.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise invalid("input", "is a string but not valid JSON") from None
    if not isinstance(raw, dict):
        raise invalid("input", "must be a JSON object with at least `prompt`")
    if "workflow" in raw:
        model: type[BaseModel] = WorkflowRequest
        if "image" in raw or "prompt" in raw:
            raise invalid("workflow", "cannot be combined with `image`/`prompt`; send one mode per job")
    else:
        model = VideoRequest
    try:
        req: Request = model.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        errors = [_describe(e) for e in exc.errors(include_input=False, include_url=False)]
        first = errors[0]
        # every problem in the sentence: a caller of RunPod's API gets the `error` string alone
        more = "".join(f" Also `{e['field']}` {e['message']}." for e in errors[1:])
        raise WorkerError(INVALID_INPUT, f"Invalid input: `{first['field']}` {first['message']}.{more}",
                          {"errors": errors}) from None
    _check_cross_field(req, max_timeout_s, s3_configured)
    return req


def _check_cross_field(req: Request, max_timeout_s: float, s3_configured: bool) -> None:
    """Rules that involve more than one field or the worker's settings."""
    if isinstance(req, VideoRequest):
        _check_video(req)
    if req.timeout_s is not None and req.timeout_s > max_timeout_s:
        raise invalid("timeout_s", f"may only lower the worker's limit of {max_timeout_s:g} s "
                                   "(JOB_TIMEOUT_S); send a smaller value or omit it")
    if req.output == "s3" and not s3_configured:
        raise invalid("output", "is 's3' but this worker has no bucket configured; "
                                "use 'base64' or 'auto', or set the BUCKET_* settings")


def _check_video(req: VideoRequest) -> None:
    """The fields the chosen graph and model can use, and their sizes."""
    sent = req.model_fields_set
    for name, why in req.spec.refuses.items():
        if name in sent:
            raise invalid(name, why)
    vm = req.video_model
    for name, why in vm.fixed.items():
        if name in sent and getattr(req, name) != vm.defaults[name]:
            raise invalid(name, why)
    if req.prompt is None and not req.segments:
        raise invalid("prompt", "is required: say what should happen in the video (or send `segments`, a "
                                "prompt for each part)")
    if req.segments and "loras" in req.spec.refuses:
        for n, entry in enumerate(req.segments):
            if entry.loras is not None:
                raise invalid(f"segments[{n}].loras", req.spec.refuses["loras"])
    if req.audio is not None and req.image is None:
        raise invalid("image", "is required for sound-to-video: the person or scene that moves to `audio` "
                               "(base64, a data URI or an https URL)")
    if req.video is not None:
        _check_animate(req)
    if "aspect_ratio" in sent and req.image is not None:
        raise invalid("aspect_ratio", "is for text-to-video (no `image`); with an image the video follows "
                                      "the image's aspect ratio: remove it, or set width/height")
    if req.resolution not in vm.areas:
        raise invalid("resolution", f"{req.resolution!r} is not a size of the {vm.name} model; it makes "
                                    f"{' or '.join(vm.areas)}: send that, or width/height")
    for name in ("width", "height"):
        value = getattr(req, name)
        if value is not None and value % vm.size_step:
            raise invalid(name, f"must be a multiple of {vm.size_step} for the {vm.name} model "
                                f"({value // vm.size_step * vm.size_step} is the nearest below)")
    if vm.has_experts and not 1 <= req.switch_step < req.steps:  # type: ignore[operator]
        raise invalid("switch_step", f"must be between 1 and steps-1 ({req.steps - 1})")  # type: ignore[operator]
    _check_interpolation(req)


def _check_interpolation(req: VideoRequest) -> None:
    """fal's three fields, with RIFE the one interpolator; an fps the model fixes stays in step."""
    if req.interpolator_model == "film":
        raise invalid("interpolator_model", "'film' is not bundled: this worker interpolates with RIFE; send "
                                            "\"rife\" (or \"none\")")
    if req.interpolator_model == "none" and req.num_interpolated_frames:
        raise invalid("num_interpolated_frames", "needs an interpolator, but `interpolator_model` is \"none\": "
                                                 "send \"rife\", or remove `num_interpolated_frames`")
    if req.adjust_fps_for_interpolation is not None and req.interpolation_factor == 1:
        raise invalid("adjust_fps_for_interpolation", "is for interpolation, which this job does not ask for: "
                                                      "send `num_interpolated_frames` (1-4), or remove it")
    if req.adjust_fps_for_interpolation is False and "fps" in req.video_model.fixed:
        raise invalid("adjust_fps_for_interpolation", "must stay true here: this video keeps time with its sound at "
                                                      f"a fixed {req.video_model.defaults['fps']:g} fps, so the "
                                                      "interpolated frames must play at the raised fps (played "
                                                      "slower, they would drift from the sound); remove it")


REPLACE_ONLY = ("background_video", "mask_video", "relight")


def _check_animate(req: VideoRequest) -> None:
    """Animate's own combinations: the character image, the replace-only inputs, one-model LoRAs."""
    if req.image is None:
        raise invalid("image", "is required for Animate: the character that moves as in `video` (base64, a "
                               "data URI or an https URL)")
    if req.mode == "move":
        for name in REPLACE_ONLY:
            if name in req.model_fields_set:
                raise invalid(name, "is for `\"mode\": \"replace\"` (the character takes the person's place "
                                    "in the video); move mode draws its own background: remove it, or send the mode")
    given = [f for f in ("pose_video", "face_video") if getattr(req, f) is not None]
    if len(given) == 1:
        missing = "face_video" if given == ["pose_video"] else "pose_video"
        raise invalid(missing, f"is missing: `{given[0]}` was given, so the worker does not preprocess `video`; "
                               f"send both `pose_video` and `face_video`, or neither (the worker makes them)")
    if not given:
        for name in ("background_video", "mask_video"):
            if getattr(req, name) is not None:
                raise invalid(name, "comes with `pose_video` and `face_video` (all made by the same preprocessing); "
                                    "send those too, or none of them (the worker makes all from `video`)")
    if given:
        for name in ("person", "return_preprocessed"):
            if name in req.model_fields_set:
                raise invalid(name, "is for the worker's own preprocessing of `video`, which `pose_video` and "
                                    "`face_video` replace: remove it, or those two")
    for n, entry in enumerate(req.loras):
        if entry.name is None:
            raise invalid(f"loras[{n}]", "needs `name` (+ `strength`) for Animate: the Animate model is one "
                                         "model, without the high- and low-noise experts `high`/`low` name")


def _round(x: float, step: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, int(x / step + 0.5) * step))


def resolve_size(req: VideoRequest, image_width: int | None = None,
                 image_height: int | None = None) -> tuple[int, int]:
    """The video size: as given; else with an image following its aspect ratio at about the area of
    `resolution`; else the model's size for `resolution` and `aspect_ratio` (16:9 by default).
    Giving one side makes the other follow the same aspect ratio."""
    vm = req.video_model
    resolution = req.resolution or vm.resolution
    if req.width and req.height:
        return req.width, req.height
    if image_width and image_height:
        aspect = image_width / image_height
    else:
        w, h = vm.sizes[resolution][req.aspect_ratio or ASPECT_RATIOS[0]]
        if not (req.width or req.height):
            return w, h
        aspect = w / h
    if req.width:
        return req.width, _round(req.width / aspect, vm.size_step)
    if req.height:
        return _round(req.height * aspect, vm.size_step), req.height
    w = math.sqrt(vm.areas[resolution] * aspect)
    return _round(w, vm.size_step), _round(w / aspect, vm.size_step)
