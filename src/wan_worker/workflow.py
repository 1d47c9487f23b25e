"""The bundled Wan2.2 I2V workflow: loaded once, its nodes found by role, a job applied to a copy.

Nodes are found by their `_meta.title` (the role), never by node id, so the graph can be re-exported
from ComfyUI with new ids as long as the titles stay. A missing or ambiguous role is a start-up
error, reported to every job instead of a crash loop.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import STARTUP_FAILED, WorkerError

Graph = dict[str, dict[str, Any]]

# role (node title) -> ComfyUI class the role must be
ROLES: dict[str, str] = {
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
    "Image To Video": "WanImageToVideo",
    "High Noise Sampler": "KSamplerAdvanced",
    "Low Noise Sampler": "KSamplerAdvanced",
    "Decode": "VAEDecode",
    "Create Video": "CreateVideo",
    "Save Video": "SaveVideo",
}


# Which progress phase a role's node belongs to; every other node counts as loading models.
PHASE_OF_ROLE = {
    "High Noise Sampler": "sampling_high",
    "Low Noise Sampler": "sampling_low",
    "Decode": "decoding",
    "Create Video": "encoding",
    "Save Video": "encoding",
}


@dataclass(frozen=True)
class I2VParams:
    """Every value a job sets in the graph, already validated and resolved."""

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
    lora_strength: float  # 0 turns the LightX2V LoRAs off (quality mode)
    switch_step: int
    sampler: str
    scheduler: str
    filename_prefix: str


@dataclass(frozen=True)
class Workflow:
    graph: Graph
    roles: dict[str, str]  # role -> node id
    path: str

    def inputs(self, graph: Graph, role: str) -> dict[str, Any]:
        return graph[self.roles[role]]["inputs"]

    def phases(self) -> dict[str, str]:
        """node id -> progress phase, for the nodes that start a new phase."""
        return {self.roles[role]: phase for role, phase in PHASE_OF_ROLE.items()}

    @property
    def default_negative_prompt(self) -> str:
        return str(self.inputs(self.graph, "Negative Prompt")["text"])

    def model_names(self) -> set[str]:
        """The model file names the loader nodes ask for (checked against the manifest)."""
        names = set()
        for role, key in (("High Noise Model", "unet_name"), ("Low Noise Model", "unet_name"),
                          ("High Noise LoRA", "lora_name"), ("Low Noise LoRA", "lora_name"),
                          ("Text Encoder", "clip_name"), ("VAE", "vae_name")):
            names.add(str(self.inputs(self.graph, role)[key]))
        return names


def _fail(path: Path, why: str) -> WorkerError:
    return WorkerError(
        STARTUP_FAILED,
        f"The workflow {path} is not usable: {why}. Restore the bundled workflow or fix WORKFLOW_PATH.",
        {"workflow_path": str(path)},
    )


def find_roles(graph: Graph, path: Path) -> dict[str, str]:
    """Map each role to its node id; every role must appear exactly once with the right class."""
    by_title: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise _fail(path, f"node {node_id!r} is not an API-format node (class_type + inputs)")
        title = (node.get("_meta") or {}).get("title")
        if title in ROLES:
            by_title.setdefault(title, []).append(node_id)
    roles: dict[str, str] = {}
    for role, class_type in ROLES.items():
        ids = by_title.get(role, [])
        if len(ids) != 1:
            raise _fail(path, f"expected one node titled {role!r}, found {len(ids)}")
        if graph[ids[0]]["class_type"] != class_type:
            raise _fail(path, f"node {role!r} is a {graph[ids[0]]['class_type']}, expected {class_type}")
        roles[role] = ids[0]
    return roles


def load_workflow(path: Path) -> Workflow:
    try:
        graph = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(Path(path), f"cannot read it as JSON ({exc})") from None
    if not isinstance(graph, dict) or "nodes" in graph:
        raise _fail(Path(path), "it is not in ComfyUI's API format (export it with 'Export (API)')")
    return Workflow(graph=graph, roles=find_roles(graph, Path(path)), path=str(path))


def build_i2v(wf: Workflow, p: I2VParams) -> Graph:
    """A copy of the workflow with the job's values applied; the loaded workflow never changes."""
    g = copy.deepcopy(wf.graph)
    wf.inputs(g, "Start Image")["image"] = p.image_name
    wf.inputs(g, "Positive Prompt")["text"] = p.prompt
    if p.negative_prompt is not None:
        wf.inputs(g, "Negative Prompt")["text"] = p.negative_prompt
    wf.inputs(g, "Image To Video").update(width=p.width, height=p.height, length=p.length)
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
    return g


def isolate_outputs(graph: Graph, folder: str) -> Graph:
    """A copy whose save nodes write under `folder/` (a folder of the run's own).

    ComfyUI serves an identical graph from its cache and reports the files of the earlier run,
    which the worker has already delivered and deleted. A per-run folder changes the save nodes'
    inputs, so they run again and write new files, while everything upstream stays cached.
    """
    g = copy.deepcopy(graph)
    for node in g.values():
        prefix = node.get("inputs", {}).get("filename_prefix")
        if isinstance(prefix, str):
            node["inputs"]["filename_prefix"] = f"{folder}/{prefix.lstrip('/')}"
    return g
