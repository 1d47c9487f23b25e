"""The block-repeating mechanism (workflow.Repeat): one graph file, any number of parts.

The graphs here are small S2V- and Animate-shaped graphs: the first part, one block that continues
it, and what reads the block's last output. Every link of every part is checked.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from wan_worker.errors import WorkerError
from wan_worker.progress import Phase, Progress
from wan_worker.workflow import Graph, GraphSpec, Repeat, check_repeat, copy_id, find_roles, repeat_block


def node(cls: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": cls, "inputs": inputs, "_meta": {"title": title}}


# S2V's shape: chunk 1 samples, each extend chunk reads the latent so far and concatenates its own.
S2V: Graph = {
    "1": node("VAELoader", "VAE", vae_name="v.safetensors"),
    "2": node("KSampler", "Sampler", seed=1),
    "3": node("WanSoundImageToVideoExtend", "Extend", vae=["1", 0], video_latent=["2", 0], length=77),
    "4": node("KSampler", "Extend Sampler", latent_image=["3", 2], positive=["3", 0], seed=1),
    "5": node("LatentConcat", "Extend Concat", samples1=["2", 0], samples2=["4", 0], dim="t"),
    "6": node("VAEDecode", "Decode", samples=["5", 0], vae=["1", 0]),
}
S2V_REPEAT = Repeat(block=("Extend", "Extend Sampler", "Extend Concat"), feeds={"Sampler": "Extend Concat"},
                    unit="chunk")

# Animate's shape: the next window reads the images so far (slot 0) and the frame offset (slot 5).
ANIMATE: Graph = {
    "10": node("WanAnimateToVideo", "Animate", video_frame_offset=0),
    "11": node("ImageFromBatch", "Images", image=["10", 0], batch_index=0, length=4096),
    "20": node("WanAnimateToVideo", "Extend Animate", continue_motion=["11", 0], video_frame_offset=["10", 5]),
    "21": node("ImageFromBatch", "Extend Images", image=["20", 0], batch_index=["20", 4], length=4096),
    "22": node("ImageBatch", "Extend Batch", image1=["11", 0], image2=["21", 0]),
    "30": node("ImageFromBatch", "Cut", image=["22", 0], batch_index=0, length=40),
}
ANIMATE_REPEAT = Repeat(block=("Extend Animate", "Extend Images", "Extend Batch"),
                        feeds={"Images": "Extend Batch", "Animate": "Extend Animate"}, unit="window")


def roles_of(g: Graph) -> dict[str, str]:
    return {n["_meta"]["title"]: nid for nid, n in g.items()}


def expanded(g: Graph, rep: Repeat, parts: int) -> Graph:
    out = copy.deepcopy(g)
    repeat_block(out, roles_of(g), rep, parts)
    return out


def links(g: Graph) -> set[tuple[str, str, str, int]]:
    return {(nid, key, v[0], v[1]) for nid, n in g.items() for key, v in n["inputs"].items() if isinstance(v, list)}


def test_two_parts_is_the_graph_as_written() -> None:
    assert expanded(S2V, S2V_REPEAT, 2) == S2V


def test_one_part_removes_the_block_and_reads_the_part_before() -> None:
    g = expanded(S2V, S2V_REPEAT, 1)
    assert set(g) == {"1", "2", "6"}
    assert g["6"]["inputs"]["samples"] == ["2", 0]
    g = expanded(ANIMATE, ANIMATE_REPEAT, 1)
    assert set(g) == {"10", "11", "30"}
    assert g["30"]["inputs"]["image"] == ["11", 0]


def test_four_chunks_chain_each_copy_after_the_one_before() -> None:
    g = expanded(S2V, S2V_REPEAT, 4)
    assert set(g) == set(S2V) | {"3:3", "4:3", "5:3", "3:4", "4:4", "5:4"}
    # part 2 is the block as written; part 3 reads part 2's concat; part 4 reads part 3's
    assert g["3:3"]["inputs"]["video_latent"] == ["5", 0]
    assert g["5:3"]["inputs"]["samples1"] == ["5", 0]
    assert g["3:4"]["inputs"]["video_latent"] == ["5:3", 0]
    assert g["5:4"]["inputs"] == {"samples1": ["5:3", 0], "samples2": ["4:4", 0], "dim": "t"}
    # links inside a copy stay inside it; shared nodes (the VAE) stay shared
    assert g["4:4"]["inputs"]["latent_image"] == ["3:4", 2]
    assert g["3:4"]["inputs"]["vae"] == ["1", 0]
    # what read the block now reads the last copy
    assert g["6"]["inputs"]["samples"] == ["5:4", 0]
    assert g["4:3"]["_meta"]["title"] == "Extend Sampler 3"
    assert g["4:3"]["inputs"]["seed"] == 1  # values set on the block are in every copy


def test_feeds_keep_their_output_slot() -> None:
    g = expanded(ANIMATE, ANIMATE_REPEAT, 3)
    assert g["20:3"]["inputs"]["continue_motion"] == ["22", 0]
    assert g["20:3"]["inputs"]["video_frame_offset"] == ["20", 5]
    assert g["22:3"]["inputs"]["image1"] == ["22", 0]
    assert g["21:3"]["inputs"]["batch_index"] == ["20:3", 4]
    assert g["30"]["inputs"]["image"] == ["22:3", 0]


def test_every_link_of_an_expanded_graph_points_at_a_node() -> None:
    for graph, rep in ((S2V, S2V_REPEAT), (ANIMATE, ANIMATE_REPEAT)):
        for parts in (1, 2, 3, 5):
            g = expanded(graph, rep, parts)
            assert all(source in g for _n, _k, source, _s in links(g)), (rep.unit, parts)
            assert len(g) == len(graph) + (parts - 2) * len(rep.block)


def test_parts_below_one_are_a_bug() -> None:
    with pytest.raises(ValueError):
        expanded(S2V, S2V_REPEAT, 0)


def test_load_refuses_a_block_that_cannot_be_removed_or_chained(tmp_path: Path) -> None:
    roles = roles_of(S2V)
    check_repeat(S2V, roles, S2V_REPEAT, tmp_path)  # the good one passes
    bad = copy.deepcopy(S2V)
    bad["6"]["inputs"]["samples"] = ["4", 0]  # reads the block's sampler: no stand-in without the block
    with pytest.raises(WorkerError, match="no stand-in"):
        check_repeat(bad, roles, S2V_REPEAT, tmp_path)
    unread = Repeat(block=S2V_REPEAT.block, feeds={"VAE": "Extend Concat", "Sampler": "Extend Concat"}, unit="chunk")
    loose = copy.deepcopy(S2V)
    loose["3"]["inputs"]["vae"] = ["1", 0]
    check_repeat(loose, roles, unread, tmp_path)  # the block reads the VAE: fine
    del loose["3"]["inputs"]["vae"], loose["6"]["inputs"]["vae"]
    with pytest.raises(WorkerError, match="never reads 'VAE'"):
        check_repeat(loose, roles, unread, tmp_path)
    backwards = Repeat(block=S2V_REPEAT.block, feeds={"Extend Concat": "Sampler"}, unit="chunk")
    with pytest.raises(WorkerError, match="from outside the block into it"):
        check_repeat(S2V, roles, backwards, tmp_path)


def _spec(phases: dict[str, str]) -> GraphSpec:
    return GraphSpec(name="s2v-test", file="x.json", roles={t: S2V[i]["class_type"] for t, i in roles_of(S2V).items()},
                     phases=phases, model_inputs=(), lora_after={}, apply=lambda *_: None, repeat=S2V_REPEAT)


def test_phases_are_counted_per_part() -> None:
    from wan_worker.workflow import Workflow
    spec = _spec({"Sampler": "sampling", "Extend Sampler": "sampling", "Decode": "decoding"})
    wf = Workflow(spec=spec, graph=S2V, roles=find_roles(S2V, Path("x.json"), spec.roles), path="x.json")
    assert wf.phases(1) == {"2": Phase("sampling", 1, 1, "chunk"), "6": "decoding"}
    assert wf.phases(3) == {"2": Phase("sampling", 1, 3, "chunk"), "4": Phase("sampling", 2, 3, "chunk"),
                            copy_id("4", 3): Phase("sampling", 3, 3, "chunk"), "6": "decoding"}


def test_progress_moves_through_the_chunks_and_never_back() -> None:
    sent: list[dict[str, Any]] = []
    phases: dict[str, str | Phase] = {"2": Phase("sampling", 1, 3, "chunk"), "4": Phase("sampling", 2, 3, "chunk"),
                                      "4:3": Phase("sampling", 3, 3, "chunk"), "6": "decoding"}
    with Progress(sent.append, phases, interval_s=0) as progress:
        for sampler in ("2", "4", "4:3"):
            progress.on_event({"type": "executing", "data": {"node": sampler}})
            for step in (1, 2):
                progress.on_event({"type": "progress", "data": {"node": sampler, "value": step, "max": 2}})
            progress.on_event({"type": "executing", "data": {"node": "1"}})  # a loader: stays in the chunk
        progress.on_event({"type": "executing", "data": {"node": "6"}})
    assert [u["percent"] for u in sent] == sorted(u["percent"] for u in sent)
    assert sent[0] == {"phase": "sampling", "chunk": 1, "chunks": 3, "percent": 10}
    assert {"phase": "sampling", "chunk": 2, "chunks": 3, "step": 1, "steps": 2, "percent": 50} in sent
    assert sent[-2] == {"phase": "sampling", "chunk": 3, "chunks": 3, "step": 2, "steps": 2, "percent": 90}
    assert sent[-1] == {"phase": "decoding", "percent": 90}
