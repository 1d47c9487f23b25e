"""models: ComfyUI's extra_model_paths.yaml rules, the safetensors header check, its cache, the CLI."""
from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wan_worker import models
from wan_worker.errors import MODEL_DAMAGED, MODELS_MISSING, STARTUP_FAILED, WorkerError
from wan_worker.models import MANIFEST, MODEL_SETS, check_volume, model_dirs
from wan_worker.settings import Settings
from tests.fakehub import torch_zip_bytes

ROOT = Path(__file__).resolve().parents[1]
VAE = next(m for m in MANIFEST if m.folder == "vae")
HIGH = MANIFEST[0]
FOLDERS = tuple(dict.fromkeys(m.folder for m in MANIFEST))  # every folder the manifest uses


def safetensors(payload: bytes = b"\x01\x00\x00\x00\x02\x00\x00\x00") -> bytes:
    header = {"__metadata__": {"format": "pt"},
              "weight": {"dtype": "I32", "shape": [len(payload) // 4], "data_offsets": [0, len(payload)]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def onnx_bytes() -> bytes:
    """The start of a protobuf ModelProto (field 1, ir_version 8), as the ONNX check reads it."""
    return b"\x08\x08" + b"\x12\x08tinyonnx" + b"\0" * 64


def write(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    default = {".onnx": onnx_bytes, ".pth": lambda: torch_zip_bytes(path.name, 16)}.get(path.suffix, safetensors)()
    path.write_bytes(default if data is None else data)
    return path


def fill(models_root: Path, skip: tuple[str, ...] = ()) -> None:
    for m in MANIFEST:
        if m.name not in skip:
            write(models_root / m.folder / m.name)


def section(name: str, base: str, *, default: bool = False, folders: tuple[str, ...] = FOLDERS) -> str:
    lines = [f"{name}:", f"  base_path: {base}"] + (["  is_default: true"] if default else [])
    return "\n".join(lines + [f"  {f}: {f}" for f in folders]) + "\n"


@pytest.fixture(autouse=True)
def fresh_caches() -> None:
    models._HEADER_CACHE.clear()
    models._YAML_CACHE.clear()


@pytest.fixture
def layout(tmp_path: Path):
    """A ComfyUI folder without models and a YAML pointing at volume/models (not yet filled)."""
    comfy = tmp_path / "comfy"
    comfy.mkdir()
    volume = tmp_path / "volume" / "models"
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(section("vol", str(volume)))
    s = Settings(comfy_dir=str(comfy), extra_model_paths=str(yaml_file))
    return s, comfy, volume, yaml_file


def dirs_of(s: Settings, folder: str) -> list[str]:
    return [str(p) for p in model_dirs(s)[folder]]


# ---------------------------------------------------------------- the check


def test_all_ok(layout) -> None:
    s, comfy, volume, _ = layout
    fill(volume)
    report = check_volume(s)
    assert report.ok and not report.missing and not report.damaged
    assert [f.path for f in report.files] == [str(volume / m.folder / m.name) for m in MANIFEST]
    assert all(f.state == "ok" and f.size == os.path.getsize(str(f.path)) for f in report.files)
    report.raise_for_problems()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and len(data["files"]) == len(MANIFEST) == 22 and data["missing"] == []
    assert all(s["complete"] for s in data["sets"].values()) and set(data["sets"]) == set(MODEL_SETS)
    assert data["searched"]["vae"] == [str(comfy / "models" / "vae"), str(volume / "vae")]


def test_one_missing(layout) -> None:
    s, comfy, volume, _ = layout
    fill(volume, skip=(VAE.name,))
    report = check_volume(s)
    assert not report.ok and [f.model for f in report.missing] == [VAE]
    with pytest.raises(WorkerError) as info:
        report.raise_for_problems()
    err = info.value
    assert err.code == MODELS_MISSING
    assert "vae/wan_2.1_vae.safetensors" in err.message
    assert str(comfy / "models" / "vae") in err.message and str(volume / "vae") in err.message
    # the 2.1 VAE serves both 14B sets: the fix names both
    assert "scripts/download_models.sh --set i2v-14b,t2v-14b" in err.message
    assert "AUTO_DOWNLOAD_MODELS=i2v-14b,t2v-14b" in err.message
    assert "loras" not in err.message  # only the folders of the missing files
    assert err.details["missing"] == [{"file": VAE.rel_path,
                                       "searched": [str(comfy / "models" / "vae"), str(volume / "vae")]}]
    assert err.details["damaged"] == [] and set(err.details["searched"]) == set(FOLDERS)


def test_all_missing_lists_every_file(layout) -> None:
    s, *_ = layout
    with pytest.raises(WorkerError) as info:
        check_volume(s).raise_for_problems()
    assert all(m.rel_path in info.value.message for m in MANIFEST)
    assert info.value.message.startswith("22 model files are missing")


def truncated() -> bytes:
    return safetensors()[:-3]


def header_bigger_than_file() -> bytes:
    return struct.pack("<Q", 1000) + b'{"a": 1}'


def absurd_header() -> bytes:
    return struct.pack("<Q", 10**12) + b"{}" * 10


def json_array_header() -> bytes:
    raw = b"[1, 2, 3]"
    return struct.pack("<Q", len(raw)) + raw


def not_json_header() -> bytes:
    raw = b"\xff\xfe not json"
    return struct.pack("<Q", len(raw)) + raw


def bad_offsets() -> bytes:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 4


def trailing_bytes() -> bytes:
    return safetensors() + b"\0" * 5


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"\x01\x02\x03", "too small"),
    (truncated(), "truncated download"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "not a safetensors"),
    (header_bigger_than_file(), "truncated"),
    (absurd_header(), "not a safetensors"),
    (struct.pack("<Q", 0) + b"{}", "length is 0"),
    (json_array_header(), "not a JSON object"),
    (not_json_header(), "not valid JSON"),
    (bad_offsets(), "data_offsets"),
    (trailing_bytes(), "more than its header"),
])
def test_damaged(layout, data: bytes, reason: str) -> None:
    s, _, volume, _ = layout
    fill(volume)
    path = write(volume / "vae" / VAE.name, data)
    report = check_volume(s)
    (bad,) = report.damaged
    assert bad.model == VAE and bad.path == str(path) and bad.size == len(data)
    assert reason in bad.reason
    with pytest.raises(WorkerError) as info:
        report.raise_for_problems()
    err = info.value
    assert err.code == MODEL_DAMAGED
    assert VAE.rel_path in err.message and str(path) in err.message and reason in err.message
    assert "delete it and download it again" in err.message
    assert err.details["damaged"][0]["path"] == str(path) and err.details["missing"] == []


def test_missing_takes_precedence_over_damaged(layout) -> None:
    s, _, volume, _ = layout
    fill(volume, skip=(VAE.name,))
    write(volume / HIGH.folder / HIGH.name, b"")
    with pytest.raises(WorkerError) as info:
        check_volume(s).raise_for_problems()
    assert info.value.code == MODELS_MISSING
    assert f"also damaged: {HIGH.rel_path}" in info.value.message
    assert [d["file"] for d in info.value.details["damaged"]] == [HIGH.rel_path]
    assert [d["file"] for d in info.value.details["missing"]] == [VAE.rel_path]


def test_first_directory_wins_and_directories_are_skipped(layout) -> None:
    s, comfy, volume, _ = layout
    fill(volume)
    (comfy / "models" / "vae" / VAE.name).mkdir(parents=True)  # a folder, not a file: skipped
    assert check_volume(s).ok
    write(comfy / "models" / "loras" / MANIFEST[2].name)
    report = check_volume(s)
    assert report.files[2].path == str(comfy / "models" / "loras" / MANIFEST[2].name)


def test_symlinks_followed_and_broken_ones_reported(layout, tmp_path: Path) -> None:
    s, _, volume, _ = layout
    fill(volume, skip=(VAE.name,))
    target = write(tmp_path / "elsewhere" / "vae.bin")
    (volume / "vae").mkdir(parents=True, exist_ok=True)
    (volume / "vae" / VAE.name).symlink_to(target)
    assert check_volume(s).ok
    target.unlink()
    (bad,) = check_volume(s).missing
    assert "broken symlink" in bad.reason


def test_damaged_file_beyond_an_ok_one_is_not_looked_at(layout) -> None:
    s, comfy, volume, _ = layout
    fill(comfy / "models")
    write(volume / "vae" / VAE.name, b"")
    assert check_volume(s).ok


# ---------------------------------------------------------------- cache


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = models.safetensors_problem

    def spy(path: str, size: int) -> str | None:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(models, "safetensors_problem", spy)
    return calls


def test_cache_skips_header_reads_until_the_file_changes(layout, monkeypatch) -> None:
    s, _, volume, _ = layout
    fill(volume)
    calls = counting(monkeypatch)
    n = sum(m.name.endswith(".safetensors") for m in MANIFEST)  # the ONNX files have a check of their own
    assert check_volume(s).ok and len(calls) == n
    assert check_volume(s).ok and len(calls) == n  # warm: stats only

    vae = volume / "vae" / VAE.name
    st = vae.stat()
    os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert check_volume(s).ok and calls[n:] == [str(vae)]

    vae.write_bytes(safetensors(b"\0" * 12))  # new size
    assert check_volume(s).ok and calls[n + 1:] == [str(vae)]
    assert sum(1 for k in models._HEADER_CACHE if k[0] == str(vae)) == 1

    vae.write_bytes(truncated())
    assert check_volume(s).damaged and check_volume(s).damaged  # damaged results are not cached
    assert calls[n + 2:] == [str(vae), str(vae)]


def test_warm_check_does_not_open_files(layout, monkeypatch) -> None:
    s, _, volume, _ = layout
    fill(volume)
    check_volume(s)

    def no_open(*_a: object, **_k: object) -> None:
        raise AssertionError("warm check opened a file")

    monkeypatch.setattr("builtins.open", no_open)
    assert check_volume(s).ok


def test_warm_check_is_fast(layout) -> None:
    s, _, volume, _ = layout
    fill(volume)
    check_volume(s)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        check_volume(s)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.020


def test_concurrent_checks_while_files_change(layout, monkeypatch) -> None:
    """The warm-up thread and the first job check at once while files are touched: every result is
    right, nothing raises, and each header version is read at most once (a slow read widens the race)."""
    s, _, volume, yaml_file = layout
    fill(volume)
    touched = [volume / m.folder / m.name for m in MODEL_SETS["i2v-14b"].files[:3]] + [yaml_file]
    reads: dict[str, int] = {}
    real = models.safetensors_problem

    def slow_read(path: str, size: int) -> str | None:
        reads[path] = reads.get(path, 0) + 1
        time.sleep(0.001)
        return real(path, size)

    monkeypatch.setattr(models, "safetensors_problem", slow_read)
    touches, errors = 20, []
    done = threading.Event()

    def toucher() -> None:
        base = {p: p.stat().st_mtime_ns for p in touched}
        for i in range(1, touches + 1):
            for p in touched:
                os.utime(p, ns=(base[p], base[p] + i * 1_000_000))
            time.sleep(0.002)
        done.set()

    def checker() -> None:
        try:
            rounds = 0
            while not done.is_set() or rounds < 5:
                assert check_volume(s).ok
                assert check_volume(s, MODEL_SETS["i2v-14b"].names, "i2v-14b").ok
                rounds += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=checker) for _ in range(4)] + [threading.Thread(target=toucher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert check_volume(s).ok
    for p in touched[:-1]:
        assert 1 <= reads[str(p)] <= touches + 1  # at most once per version (mtime) it had
        assert [k[2] for k in models._HEADER_CACHE if k[0] == str(p)] == [p.stat().st_mtime_ns]
    untouched = volume / VAE.folder / VAE.name
    assert reads[str(untouched)] == 1


def test_yaml_change_is_picked_up(layout, tmp_path: Path) -> None:
    s, comfy, volume, yaml_file = layout
    assert dirs_of(s, "vae")[-1] == str(volume / "vae")
    other = tmp_path / "other"
    yaml_file.write_text(section("vol", str(other)) + "# longer now\n")
    assert dirs_of(s, "vae")[-1] == str(other / "vae")


def test_the_worker_nodes_own_folder_comes_after_the_yaml_paths(tmp_path: Path) -> None:
    """frame_interpolation is registered by the worker's ComfyUI node after ComfyUI read the YAML, so
    its models/<folder> is searched last there, even after a non-default section."""
    s = settings_for(tmp_path, section("vol", "/v1", folders=("frame_interpolation", "upscale_models")))
    models_dir = tmp_path / "comfy" / "models"
    dirs = model_dirs(s)
    assert dirs["frame_interpolation"] == [Path("/v1/frame_interpolation"), models_dir / "frame_interpolation"]
    assert dirs["upscale_models"] == [models_dir / "upscale_models", Path("/v1/upscale_models")]  # ComfyUI's own


# ---------------------------------------------------------------- YAML rules


def settings_for(tmp_path: Path, text: str, name: str = "paths.yaml") -> Settings:
    yaml_file = tmp_path / "cfg" / name
    yaml_file.parent.mkdir(parents=True, exist_ok=True)
    yaml_file.write_text(text)
    return Settings(comfy_dir=str(tmp_path / "comfy"), extra_model_paths=str(yaml_file))


def test_comfyui_default_folders_and_their_order(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "empty_section:\n")
    models_dir = tmp_path / "comfy" / "models"
    assert model_dirs(s) == {
        "diffusion_models": [models_dir / "unet", models_dir / "diffusion_models"],
        "loras": [models_dir / "loras"],
        "text_encoders": [models_dir / "text_encoders", models_dir / "clip"],
        "vae": [models_dir / "vae"],
        "audio_encoders": [models_dir / "audio_encoders"],
        "clip_vision": [models_dir / "clip_vision"],
        "detection": [models_dir / "detection"],
        "frame_interpolation": [models_dir / "frame_interpolation"],
        "upscale_models": [models_dir / "upscale_models"],
    }


def test_is_default_goes_first_others_after_comfyui(tmp_path: Path) -> None:
    s = settings_for(tmp_path, section("a", "/a", folders=("vae",))
                     + section("b", "/b", default=True, folders=("vae",))
                     + section("c", "/c", folders=("vae",)))
    assert dirs_of(s, "vae") == ["/b/vae", str(tmp_path / "comfy" / "models" / "vae"), "/a/vae",
                                 "/c/vae"]


def test_multi_line_paths(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "vol:\n  base_path: /v\n  loras: |\n    loras\n    more/loras\n\n"
                               "    /abs/loras\n")
    assert dirs_of(s, "loras")[1:] == ["/v/loras", "/v/more/loras", "/abs/loras"]


def test_multi_line_paths_in_a_default_section_reverse(tmp_path: Path) -> None:
    """ComfyUI inserts each is_default path at the front, so the last line ends up first."""
    s = settings_for(tmp_path, "vol:\n  base_path: /v\n  is_default: true\n  loras: |\n    one\n    two\n")
    assert dirs_of(s, "loras")[:2] == ["/v/two", "/v/one"]


def test_unet_and_clip_aliases(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "vol:\n  base_path: /v\n  unet: my_unet\n  clip: my_clip\n")
    assert dirs_of(s, "diffusion_models")[-1] == "/v/my_unet"
    assert dirs_of(s, "text_encoders")[-1] == "/v/my_clip"


def test_unet_alias_finds_the_file(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    fill(vol)
    (vol / "diffusion_models").rename(vol / "unet")
    (vol / "text_encoders").rename(vol / "clip")
    s = settings_for(tmp_path, f"vol:\n  base_path: {vol}\n  unet: unet\n  clip: clip\n"
                               "  loras: loras\n  vae: vae\n  audio_encoders: audio_encoders\n"
                               "  clip_vision: clip_vision\n  detection: detection\n"
                               "  frame_interpolation: frame_interpolation\n  upscale_models: upscale_models\n")
    report = check_volume(s)
    assert report.ok and report.files[0].path == str(vol / "unet" / HIGH.name)


def test_home_and_env_vars_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VOL_ROOT", "/mnt/vol")
    s = settings_for(tmp_path, section("h", "~/models", folders=("vae",))
                     + section("e", "$VOL_ROOT/models", folders=("vae",))
                     + section("b", "${VOL_ROOT}/x", folders=("vae",)))
    assert dirs_of(s, "vae")[1:] == [str(tmp_path / "home" / "models" / "vae"),
                                     "/mnt/vol/models/vae", "/mnt/vol/x/vae"]


def test_relative_base_path_and_paths_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "rel:\n  base_path: ../volume\n  vae: vae\n"
                               "nobase:\n  loras: ./my/loras\n  vae: /abs/vae\n")
    assert dirs_of(s, "vae")[1:] == [str(tmp_path / "volume" / "vae"), "/abs/vae"]
    assert dirs_of(s, "loras")[1:] == [str(tmp_path / "cfg" / "my" / "loras")]


def test_duplicates_are_kept_once_and_is_default_moves_them(tmp_path: Path) -> None:
    s = settings_for(tmp_path, section("a", "/v", folders=("vae",)) + section("b", "/v", folders=("vae",))
                     + section("c", "/w", folders=("vae",)) + section("d", "/w", default=True,
                                                                     folders=("vae",)))
    assert dirs_of(s, "vae") == ["/w/vae", str(tmp_path / "comfy" / "models" / "vae"), "/v/vae"]


def test_paths_are_normalized_and_other_folders_ignored(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "vol:\n  base_path: /v/\n  vae: ./vae/\n  checkpoints: ckpt\n"
                               "  custom_thing: x\n")
    assert dirs_of(s, "vae")[-1] == "/v/vae"
    assert set(model_dirs(s)) == set(FOLDERS)


def test_null_section_is_skipped(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "nothing:\n" + section("vol", "/v", folders=("vae",)))
    assert dirs_of(s, "vae")[-1] == "/v/vae"


def test_comfyui_own_yaml_is_read_first(tmp_path: Path) -> None:
    comfy = tmp_path / "comfy"
    comfy.mkdir()
    (comfy / "extra_model_paths.yaml").write_text(section("own", "/own", folders=("vae",)))
    s = settings_for(tmp_path, section("vol", "/v", folders=("vae",)))
    assert dirs_of(s, "vae")[1:] == ["/own/vae", "/v/vae"]
    assert dirs_of(Settings(comfy_dir=str(comfy)), "vae")[1:] == ["/own/vae"]
    both = Settings(comfy_dir=str(comfy), extra_model_paths=str(comfy / "extra_model_paths.yaml"))
    assert dirs_of(both, "vae")[1:] == ["/own/vae"]


def test_no_yaml_at_all_means_comfyui_defaults(tmp_path: Path) -> None:
    s = Settings(comfy_dir=str(tmp_path / "comfy"))
    assert dirs_of(s, "vae") == [str(tmp_path / "comfy" / "models" / "vae")]


@pytest.mark.parametrize("text, why", [
    ("vol:\n  base_path: /v\n  vae: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "top level"),
    ("", "top level"),
    ("vol: just a string\n", "not a mapping"),
    ("vol:\n  base_path: /v\n  vae:\n    - a\n    - b\n", "vol.vae"),
    ("vol:\n  base_path:\n  vae: vae\n", "base_path"),
    ("vol:\n  base_path: 42\n  vae: vae\n", "base_path"),
])
def test_malformed_yaml_is_a_startup_error(tmp_path: Path, text: str, why: str) -> None:
    s = settings_for(tmp_path, text)
    with pytest.raises(WorkerError) as info:
        check_volume(s)
    assert info.value.code == STARTUP_FAILED
    assert str(tmp_path / "cfg" / "paths.yaml") in info.value.message and why in info.value.message


def test_unreadable_yaml_is_a_startup_error(tmp_path: Path) -> None:
    s = Settings(comfy_dir=str(tmp_path), extra_model_paths=str(tmp_path / "nope.yaml"))
    with pytest.raises(WorkerError) as info:
        model_dirs(s)
    assert info.value.code == STARTUP_FAILED and "nope.yaml" in info.value.message


def test_shipped_yaml_has_the_three_layouts(tmp_path: Path) -> None:
    s = Settings(comfy_dir=str(tmp_path / "comfy"), extra_model_paths=str(ROOT / "extra_model_paths.yaml"))
    dirs = {k: [str(p) for p in v] for k, v in model_dirs(s).items()}
    slim = "/runpod-volume/runpod-slim/ComfyUI/models"
    own = str(tmp_path / "comfy" / "models")
    assert dirs["diffusion_models"] == [f"{slim}/diffusion_models", f"{slim}/unet", f"{own}/unet",
                                        f"{own}/diffusion_models", "/runpod-volume/models/diffusion_models",
                                        "/runpod-volume/models/unet", "/workspace/models/diffusion_models",
                                        "/workspace/models/unet"]
    assert dirs["text_encoders"][:2] == [f"{slim}/text_encoders", f"{slim}/clip"]
    assert dirs["vae"] == [f"{slim}/vae", f"{own}/vae", "/runpod-volume/models/vae",
                           "/workspace/models/vae"]
    import yaml

    config = yaml.safe_load((ROOT / "extra_model_paths.yaml").read_text())
    assert [c["base_path"] for c in config.values()] == [slim, "/runpod-volume/models", "/workspace/models"]
    for conf in config.values():
        assert {"checkpoints", "diffusion_models", "unet", "loras", "text_encoders", "clip",
                "clip_vision", "vae", "upscale_models"} <= set(conf)


# ---------------------------------------------------------------- CLI


def env_for(monkeypatch: pytest.MonkeyPatch, s: Settings) -> None:
    monkeypatch.setenv("COMFY_DIR", s.comfy_dir)
    monkeypatch.setenv("EXTRA_MODEL_PATHS", s.extra_model_paths)


def test_cli_all_ok(layout, monkeypatch, capsys) -> None:
    s, _, volume, _ = layout
    fill(volume)
    env_for(monkeypatch, s)
    assert models.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == len(MANIFEST) and str(volume / "vae" / VAE.name) in out
    assert out.count("COMPLETE ") == len(MODEL_SETS) == 6 and "This volume can serve: image-to-video" in out
    assert "GB" in out and str(volume / "vae") in out and "present and complete" in out


def test_cli_problems(layout, monkeypatch, capsys) -> None:
    s, _, volume, _ = layout
    fill(volume, skip=(VAE.name,))
    write(volume / HIGH.folder / HIGH.name, b"junk")
    env_for(monkeypatch, s)
    assert models.main([]) == 1
    out = capsys.readouterr().out
    assert "MISSING  vae/wan_2.1_vae.safetensors" in out and "DAMAGED  " + HIGH.rel_path in out
    assert "download_models.sh" in out and "too small" in out


def test_cli_json(layout, monkeypatch, capsys) -> None:
    s, _, volume, _ = layout
    fill(volume, skip=(VAE.name,))
    env_for(monkeypatch, s)
    assert models.main(["--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["missing"] == [VAE.rel_path]
    assert data["searched"]["vae"][-1] == str(volume / "vae")


def test_cli_startup_error(tmp_path: Path, monkeypatch, capsys) -> None:
    s = settings_for(tmp_path, "vol: [\n")
    env_for(monkeypatch, s)
    assert models.main([]) == 2
    assert "STARTUP_FAILED" in capsys.readouterr().err
    assert models.main(["--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error_code"] == STARTUP_FAILED


def test_cli_bad_setting_is_a_startup_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", "lots")
    assert models.main([]) == 2


def test_cli_as_module(layout) -> None:
    s, _, volume, _ = layout
    fill(volume)
    env = {**os.environ, "COMFY_DIR": s.comfy_dir, "EXTRA_MODEL_PATHS": s.extra_model_paths}
    proc = subprocess.run([sys.executable, "-m", "wan_worker.models", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_onnx_files_have_a_check_of_their_own(tmp_path: Path) -> None:
    good = write(tmp_path / "yolox_l.onnx")
    assert models.onnx_problem(str(good), good.stat().st_size) is None
    assert models.file_problem(str(good), good.stat().st_size) is None
    html = write(tmp_path / "dw.onnx", b"<html>" + b" " * 100)
    assert "not an ONNX file" in models.file_problem(str(html), html.stat().st_size)
    tiny = write(tmp_path / "t.onnx", b"\x08\x08")
    assert "too small" in models.file_problem(str(tiny), 2)
    # a download's temporary name: the model's own name decides the check
    part = write(tmp_path / ".yolox_l.onnx.part", onnx_bytes())
    assert models.file_problem(str(part), part.stat().st_size, "yolox_l.onnx") is None


def test_preprocessing_files_are_found_for_the_worker(layout) -> None:
    from wan_worker.preprocess import volume_models

    s, _, volume, _ = layout
    with pytest.raises(WorkerError) as err:
        volume_models(s)
    assert err.value.code == "MODELS_MISSING" and err.value.details["set"] == "animate-14b"
    assert "detection/yolox_l.onnx" in err.value.message
    fill(volume)
    found = volume_models(s)
    assert found.detector == volume / "detection" / "yolox_l.onnx"
    assert found.pose == volume / "detection" / "dw-ll_ucoco_384.onnx"
    assert {"yolox_l.onnx", "dw-ll_ucoco_384.onnx"} <= MODEL_SETS["animate-14b"].names
