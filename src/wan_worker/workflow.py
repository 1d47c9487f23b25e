"""Bundled API-format graphs: loaded once, nodes found by role, a job applied to a copy.

What is specific to one graph (its roles, progress phases, model inputs, where user LoRAs chain,
how a job's values are written) is a `GraphSpec` (see graphs.py); this module only knows how to
load any spec's file and apply it. Nodes are found by their `_meta.title` (the role), never by node
id, so a graph can be re-exported from ComfyUI with new ids as long as the titles stay. A missing
or ambiguous role is a start-up error, reported to every job instead of a crash loop.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import STARTUP_FAILED, WorkerError

Graph = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class GraphSpec:
    """One bundled graph: everything the pipeline needs to know about it, in one place."""

    name: str  # what results and dry runs call it: "i2v", "flf2v"
    file: str  # its file in workflows/
    roles: Mapping[str, str]  # role (node title) -> the ComfyUI class that node must be
    phases: Mapping[str, str]  # role -> the progress phase its node starts; others: loading_models
    model_inputs: tuple[tuple[str, str], ...]  # (role, input) naming each model file the graph loads
    lora_after: Mapping[str, str]  # expert ("high"/"low") -> role whose MODEL output user LoRAs follow
    apply: Callable[["Workflow", Graph, Any], None]  # writes a job's values into a copy of the graph
    model_set: str = "i2v-14b"  # the models.MODEL_SETS entry whose files this graph loads
    video_model: Any = None  # graphs.VideoModel: the defaults and sizes of the model it runs
    refuses: Mapping[str, str] = field(default_factory=dict)  # job field -> why this graph cannot use it


@dataclass(frozen=True)
class LoraNode:
    """A user LoRA as the graph needs it: which expert, the name ComfyUI lists, the strength."""

    expert: str  # "high" | "low"
    name: str  # lora_name, relative to a folder of ComfyUI's `loras` search path
    strength: float


@dataclass(frozen=True)
class Workflow:
    spec: GraphSpec
    graph: Graph
    roles: dict[str, str]  # role -> node id
    path: str

    def inputs(self, graph: Graph, role: str) -> dict[str, Any]:
        return graph[self.roles[role]]["inputs"]

    def phases(self) -> dict[str, str]:
        """node id -> progress phase, for the nodes that start a new phase."""
        return {self.roles[role]: phase for role, phase in self.spec.phases.items()}

    def default(self, role: str, key: str) -> Any:
        return self.inputs(self.graph, role)[key]

    def model_names(self) -> set[str]:
        """The model file names the loader nodes ask for (checked against the manifest)."""
        return {str(self.default(role, key)) for role, key in self.spec.model_inputs}

    def build(self, params: Any, loras: Sequence[LoraNode] = ()) -> Graph:
        """A copy with the job's values applied and its LoRAs chained in; the loaded graph never changes."""
        g = copy.deepcopy(self.graph)
        self.spec.apply(self, g, params)
        for expert, after in self.spec.lora_after.items():
            chain_loras(g, self.roles[after], [lo for lo in loras if lo.expert == expert], expert)
        return g


def chain_loras(g: Graph, after: str, loras: Sequence[LoraNode], expert: str) -> None:
    """Insert one LoraLoaderModelOnly per LoRA after node `after`: whatever read that node's model
    now reads the last LoRA's."""
    if not loras:
        return
    consumers = [(nid, key) for nid, node in g.items() for key, value in node["inputs"].items()
                 if value == [after, 0]]
    next_id = max((int(k) for k in g if k.isdigit()), default=0) + 1
    previous = after
    for n, lora in enumerate(loras, 1):
        node_id, next_id = str(next_id), next_id + 1
        g[node_id] = {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": [previous, 0], "lora_name": lora.name, "strength_model": lora.strength},
                      "_meta": {"title": f"User LoRA {expert} {n}"}}
        previous = node_id
    for node_id, key in consumers:
        g[node_id]["inputs"][key] = [previous, 0]


def _fail(path: Path, why: str) -> WorkerError:
    return WorkerError(
        STARTUP_FAILED,
        f"The workflow {path} is not usable: {why}. Restore the bundled workflows or fix WORKFLOWS_DIR.",
        {"workflow_path": str(path)},
    )


def find_roles(graph: Graph, path: Path, roles: Mapping[str, str]) -> dict[str, str]:
    """Map each role to its node id; every role must appear exactly once with the right class."""
    by_title: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise _fail(path, f"node {node_id!r} is not an API-format node (class_type + inputs)")
        title = (node.get("_meta") or {}).get("title")
        if title in roles:
            by_title.setdefault(title, []).append(node_id)
    found: dict[str, str] = {}
    for role, class_type in roles.items():
        ids = by_title.get(role, [])
        if len(ids) != 1:
            raise _fail(path, f"expected one node titled {role!r}, found {len(ids)}")
        if graph[ids[0]]["class_type"] != class_type:
            raise _fail(path, f"node {role!r} is a {graph[ids[0]]['class_type']}, expected {class_type}")
        found[role] = ids[0]
    return found


def load_workflow(spec: GraphSpec, directory: Path) -> Workflow:
    path = Path(directory) / spec.file
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(path, f"cannot read it as JSON ({exc})") from None
    if not isinstance(graph, dict) or "nodes" in graph:
        raise _fail(path, "it is not in ComfyUI's API format (export it with 'Export (API)')")
    return Workflow(spec=spec, graph=graph, roles=find_roles(graph, path, spec.roles), path=str(path))


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
