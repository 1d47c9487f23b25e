"""Bundled API-format graphs: loaded once, nodes found by role, a job applied to a copy.

What is specific to one graph (its roles, progress phases, model inputs, where user LoRAs chain,
how a job's values are written) is a `GraphSpec` (see graphs.py); this module only knows how to
load any spec's file and apply it. Nodes are found by their `_meta.title` (the role), never by node
id, so a graph can be re-exported from ComfyUI with new ids as long as the titles stay. A missing
or ambiguous role is a start-up error, reported to every job instead of a crash loop.

Graphs whose length varies per job (S2V's chunks, Animate's windows, a story's segments) hold their
repeated block once (`Repeat`); `repeat_block` removes it or copies it to the job's number of parts,
and a spec's `apply_part` writes each part's own values (a segment's prompt, seed, length).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import STARTUP_FAILED, WorkerError
from .progress import BANDS, Phase, Progress, Timed
from .settings import Settings

Graph = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Repeat:
    """A block of titled nodes that a job repeats as often as it needs: one more S2V chunk, one more
    Animate window. The graph file holds the block once, wired after the part it continues, so it
    opens in ComfyUI as a two-part job.

    `feeds` names each node outside the block that the block reads as "the part before" (S2V: the
    first sampler's latent; Animate: the first window's images and WanAnimateToVideo) and the block
    node that the next copy reads in its place, at the same output slot. Nodes after the block read
    the last copy; with one part the block goes and they read the `feeds` nodes instead.
    """

    block: tuple[str, ...]  # the roles of the block's nodes
    feeds: Mapping[str, str]  # role outside the block -> block role the next copy reads instead
    unit: str  # what progress calls one part: "chunk", "window", "segment"
    # (block role, input) -> block role: that input of a copy reads the part before's copy of this
    # role, where `feeds` would give another (a segment's start frame reads the previous segment's
    # latent, its join reads the video so far: both are the first sampler's latent in part 1)
    reads: Mapping[tuple[str, str], str] = field(default_factory=dict)
    twins: Mapping[str, str] = field(default_factory=dict)  # block role -> the role that plays it in part 1
    # expert -> the block role whose `model` input a part's own LoRAs feed (a segment's `loras`)
    lora_into: Mapping[str, str] = field(default_factory=dict)
    last_only: tuple[tuple[str, str], ...] = ()  # (block role, input): a link only the last part keeps
    optional: bool = False  # one part is the plain graph, and its progress names no part (segments)


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
    repeat: Repeat | None = None  # the block a job repeats (params.parts parts in all)
    # (workflow, seconds of the input that drives the video: S2V's sound) -> (frames, parts);
    # None: the job's `length` decides, in one part
    timing: Callable[["Workflow", float], tuple[int, int]] | None = None
    # (request, JobContext) -> Driven: reads and checks the inputs that decide the video's length and
    # parts (S2V's sound, Animate's videos, a story's segments) before anything is queued
    drive: Callable[[Any, "JobContext"], "Driven"] | None = None
    apply_part: Callable[["Workflow", Graph, Any, int], None] | None = None  # a part's own values, parts 1..n
    job_models: Callable[[Any], frozenset[str]] | None = None  # model files a job needs beyond the graph's


@dataclass(frozen=True)
class JobContext:
    """What a GraphSpec's `drive` hook gets beside the request."""

    job_id: str
    settings: Settings
    workflow: "Workflow"
    progress: Progress
    timings: Timed
    size: tuple[int, int]  # the video's width and height
    seed: int  # the job's seed, drawn already when the job sent none


@dataclass(frozen=True)
class Driven:
    """What a job's driving inputs decide: the length and parts, the VideoParams values they set,
    the files they upload (after the images), and what the result and a dry run show of them."""

    length: int  # frames of the whole video
    parts: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)  # VideoParams fields
    uploads: tuple[tuple[str, bytes, str], ...] = ()  # (name, bytes, MIME type)
    fields: Mapping[str, Any] = field(default_factory=dict)  # result fields
    checks: Mapping[str, Any] = field(default_factory=dict)  # dry-run checks
    beside: Mapping[str, bytes] = field(default_factory=dict)  # result key -> MP4 (return_preprocessed)
    part_loras: Mapping[int, Sequence[Any]] = field(default_factory=dict)  # part -> its own LoRA entries


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

    def phases(self, parts: int = 1) -> dict[str, str | Phase]:
        """node id -> progress phase, for the nodes that start a new phase. In a repeated graph a
        phase that the block has too (sampling) is counted per part: `Phase(name, part, parts, unit)`,
        the phases a part goes through sharing its slice of the job's scale (`cycle`)."""
        rep = self.spec.repeat
        if rep is None or (rep.optional and parts == 1):
            return {self.roles[role]: phase for role, phase in self.spec.phases.items()
                    if rep is None or role not in rep.block}
        in_block = {self.spec.phases[r] for r in rep.block if r in self.spec.phases}
        cycle = phase_cycle(in_block)
        out: dict[str, str | Phase] = {}
        for role, phase in self.spec.phases.items():
            node = self.roles[role]
            if role in rep.block:
                if parts >= 2:
                    out[node] = Phase(phase, 2, parts, rep.unit, cycle)
                    out.update({copy_id(node, k): Phase(phase, k, parts, rep.unit, cycle)
                                for k in range(3, parts + 1)})
            elif phase in in_block:
                out[node] = Phase(phase, 1, parts, rep.unit, cycle)
            else:
                out[node] = phase
        return out

    def default(self, role: str, key: str) -> Any:
        return self.inputs(self.graph, role)[key]

    def part_id(self, role: str, part: int) -> str:
        """The node that plays block role `role` in part `part` (1: its twin outside the block)."""
        rep = self.spec.repeat
        if rep is None or role not in rep.block:
            return self.roles[role]
        if part == 1:
            return self.roles[rep.twins[role]]
        return self.roles[role] if part == 2 else copy_id(self.roles[role], part)

    def part_inputs(self, graph: Graph, role: str, part: int) -> dict[str, Any]:
        return graph[self.part_id(role, part)]["inputs"]

    def shared(self, graph: Graph, role: str) -> list[dict[str, Any]]:
        """The inputs of `role` and of the block role that plays it in later parts (before the block
        is repeated): values every part shares (steps, size, shift) are written through this."""
        rep = self.spec.repeat
        twins = [b for b, t in (rep.twins.items() if rep else ()) if t == role and self.roles[b] in graph]
        return [self.inputs(graph, r) for r in (role, *twins)]

    def one_part(self) -> Graph:
        """A copy of the graph as one part (its repeated block removed): the graph a job without
        segments, or with one chunk or window, builds on. The file itself opens in ComfyUI as two."""
        g = copy.deepcopy(self.graph)
        if self.spec.repeat is not None:
            repeat_block(g, self.roles, self.spec.repeat, 1)
        return g

    def model_names(self) -> set[str]:
        """The model file names the loader nodes ask for (checked against the manifest)."""
        return {str(self.default(role, key)) for role, key in self.spec.model_inputs}

    def build(self, params: Any, loras: Sequence[LoraNode] = (),
              part_loras: Mapping[int, Sequence[LoraNode]] | None = None) -> Graph:
        """A copy with the job's values applied and its LoRAs chained in; the loaded graph never
        changes. `part_loras`: the parts (segments) with LoRAs of their own instead of `loras`."""
        g = copy.deepcopy(self.graph)
        self.spec.apply(self, g, params)
        rep = self.spec.repeat
        if rep is not None:
            repeat_block(g, self.roles, rep, params.parts)
        for expert, after in self.spec.lora_after.items():  # every part's model, each copy's too
            chain_loras(g, self.roles[after], [lo for lo in loras if lo.expert == expert], expert)
        if rep is not None:
            self._apply_parts(g, rep, params, part_loras or {})
        return g

    def _apply_parts(self, g: Graph, rep: Repeat, params: Any, part_loras: Mapping[int, Sequence[LoraNode]]) -> None:
        """Each part's own values and LoRAs; links only the last part keeps go from the others."""
        for part in range(1, params.parts + 1):
            if self.spec.apply_part is not None:
                self.spec.apply_part(self, g, params, part)
            if part in part_loras:
                for expert, into in rep.lora_into.items():
                    chain_loras(g, self.roles[self.spec.lora_after[expert]],
                                [lo for lo in part_loras[part] if lo.expert == expert],
                                f"{expert} ({rep.unit} {part})", readers=[(self.part_id(into, part), "model")])
        for role, key in rep.last_only:
            for part in range(1, params.parts):
                self.part_inputs(g, role, part).pop(key, None)


def phase_cycle(phases: set[str]) -> tuple[str, ...]:
    """The phases each part goes through, in the order of their bands (I2V: high, then low)."""
    return tuple(sorted(phases, key=lambda p: BANDS.get(p, (0, 0)))) if len(phases) > 1 else ()


def copy_id(node_id: str, part: int) -> str:
    """The id of a block node's copy for part 3, 4, ... (the block itself is part 2)."""
    return f"{node_id}:{part}"


def _links_to(node: dict[str, Any], source: str) -> bool:
    return any(isinstance(v, list) and len(v) == 2 and v[0] == source for v in node["inputs"].values())


def _readers(g: Graph, ids: set[str]) -> list[tuple[str, str, str, int]]:
    """(node, input, source, slot) for every link into one of `ids` from a node outside them."""
    return [(nid, key, value[0], value[1]) for nid, node in g.items() if nid not in ids
            for key, value in node["inputs"].items()
            if isinstance(value, list) and len(value) == 2 and value[0] in ids]


def repeat_block(g: Graph, roles: Mapping[str, str], rep: Repeat, parts: int) -> None:
    """Give the graph `parts` parts: remove the block (1), keep it (2), or chain copies after it.

    Values are set on the block before this runs (GraphSpec.apply), so every copy has them. Copies
    get ids `<id>:<part>` and titles `<title> <part>`; their links inside the block go to their own
    copies, their `feeds` links to the copy before them.
    """
    if parts < 1:
        raise ValueError(f"a graph needs at least one part, not {parts}")
    block = {roles[r] for r in rep.block}
    feeds = {roles[outside]: roles[inside] for outside, inside in rep.feeds.items()}
    reads = {(roles[r], key): roles[inside] for (r, key), inside in rep.reads.items()}
    after = _readers(g, block)
    if parts == 1:
        back = {inside: outside for outside, inside in feeds.items()}
        for nid in block:
            del g[nid]
        for nid, key, source, slot in after:
            g[nid]["inputs"][key] = [back[source], slot]
        return
    last = {nid: nid for nid in block}
    for part in range(3, parts + 1):
        here = {nid: copy_id(nid, part) for nid in block}
        for nid in block:
            node = copy.deepcopy(g[nid])
            for key, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    if value[0] in block:
                        node["inputs"][key] = [here[value[0]], value[1]]
                    elif (nid, key) in reads:
                        node["inputs"][key] = [last[reads[nid, key]], value[1]]
                    elif value[0] in feeds:
                        node["inputs"][key] = [last[feeds[value[0]]], value[1]]
            meta = node.setdefault("_meta", {})
            meta["title"] = f"{meta.get('title', node['class_type'])} {part}"
            g[here[nid]] = node
        last = here
    for nid, key, source, slot in after:
        g[nid]["inputs"][key] = [last[source], slot]


def check_repeat(graph: Graph, roles: Mapping[str, str], rep: Repeat, path: Path) -> None:
    """At load: the block can be removed (whatever reads it from outside is a `feeds` node's stand-in)
    and chained (every `feeds` node is read by the block)."""
    block = {roles[r] for r in rep.block}
    for outside, inside in rep.feeds.items():
        if inside not in rep.block or outside in rep.block:
            raise _fail(path, f"repeat feed {outside!r} -> {inside!r} must lead from outside the block into it")
    stand_ins = {roles[inside] for inside in rep.feeds.values()}
    for nid, key, source, _slot in _readers(graph, block):
        if source not in stand_ins:
            raise _fail(path, f"node {nid!r} reads {graph[source]['_meta']['title']!r} of the repeated block "
                              f"(input {key!r}), which has no stand-in when the block is removed")
    for outside in rep.feeds:
        if not any(_links_to(graph[nid], roles[outside]) for nid in block):
            raise _fail(path, f"the repeated block never reads {outside!r}, so its copies cannot chain")
    for (role, key), inside in rep.reads.items():
        value = graph[roles[role]]["inputs"].get(key) if role in rep.block else None
        if inside not in rep.block or not (isinstance(value, list) and value[0] not in block):
            raise _fail(path, f"repeat read {role!r}.{key} must be a link from outside the block, "
                              f"continued by {inside!r} of the block")
    for inside, twin in rep.twins.items():
        if inside not in rep.block or twin in rep.block:
            raise _fail(path, f"repeat twin {inside!r} -> {twin!r} must pair a block role with one outside it")
    for role, key in (*((r, "model") for r in rep.lora_into.values()), *rep.last_only):
        if role not in rep.twins or key not in graph[roles[role]]["inputs"] \
                or key not in graph[roles[rep.twins[role]]]["inputs"]:
            raise _fail(path, f"{role!r} and the role it plays in part 1 must both have the input {key!r}")


def chain_loras(g: Graph, after: str, loras: Sequence[LoraNode], expert: str,
                readers: Sequence[tuple[str, str]] | None = None) -> None:
    """Insert one LoraLoaderModelOnly per LoRA after node `after`: whatever read that node's model
    (or only `readers`, (node, input) pairs: one segment's own LoRAs) now reads the last LoRA's."""
    if not loras and readers is None:
        return
    consumers = list(readers) if readers is not None else [
        (nid, key) for nid, node in g.items() for key, value in node["inputs"].items() if value == [after, 0]]
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
    roles = find_roles(graph, path, spec.roles)
    if spec.repeat is not None:
        check_repeat(graph, roles, spec.repeat, path)
    return Workflow(spec=spec, graph=graph, roles=roles, path=str(path))


def isolate_outputs(graph: Graph, folder: str) -> Graph:
    """A copy whose save nodes write under `folder/` (a folder of the run's own).

    ComfyUI serves an identical graph from its cache and reports the files of the earlier run,
    which the worker has already delivered and deleted. A per-run folder changes the save nodes'
    inputs, so they run again and write new files, while everything upstream stays cached.
    Only the save nodes are copied (`graph` is left as it was, and nothing changes the result's
    other nodes afterwards): a second deep copy of a bundled graph cost ~0.1 ms a job, for nothing.
    """
    g = dict(graph)
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        prefix = inputs.get("filename_prefix") if isinstance(inputs, dict) else None
        if isinstance(prefix, str):
            g[node_id] = {**node, "inputs": {**inputs, "filename_prefix": f"{folder}/{prefix.lstrip('/')}"}}
    return g
