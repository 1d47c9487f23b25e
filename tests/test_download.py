"""`python -m wan_worker.download` against a stand-in hub on 127.0.0.1.

The contract tests run the CLI in a subprocess with HF_ENDPOINT pointing at the fake hub and a
temporary HF_HOME, because huggingface_hub reads its environment at import time: the honest way to
test it. The finer cases call `download.main` in-process (`cli`), with huggingface_hub's constants
aimed at the fake hub, to keep the suite at a few seconds (each subprocess costs ~0.4 s of imports).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
from huggingface_hub import constants

from wan_worker import download, models
from wan_worker.models import MANIFEST, MODEL_SETS

from tests.fakehub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
VAE = next(m for m in MANIFEST if m.folder == "vae")
I2V_SET = MODEL_SETS["i2v-14b"].files
LORA = next(m for m in MANIFEST if m.folder == "loras")
TOKEN = "hf_test_secret_token_123"
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models"


def hub_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """The process environment minus any real HF settings, pointed at the fake hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    env.update(extra)
    return env


def run(endpoint: str, dest: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "wan_worker.download", "--dest", str(dest), *args]
    return subprocess.run(cmd, env=hub_env(endpoint, dest.parent, **env), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> Cli:
    """Run `download.main` in this process against `endpoint`; (exit code, stdout, stderr)."""
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)

    def call(endpoint: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        code = download.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def final(dest: Path, m: models.ModelFile) -> Path:
    return dest / m.folder / m.name


def leftovers(dest: Path) -> list[Path]:
    """Temp files (hidden names) anywhere under dest."""
    return [p for p in dest.rglob(".*") if p.is_file()] if dest.exists() else []


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def seed(hub: FakeHub, dest: Path) -> None:
    """Put the hub's files in place, as a finished earlier run would have."""
    for m in MANIFEST:
        final(dest, m).parent.mkdir(parents=True, exist_ok=True)
        final(dest, m).write_bytes(hub.files[(m.repo, m.repo_path)])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- downloading ----------------------------------------------------------------------------------


def test_fresh_download_lands_the_six_files_of_the_default_set(hub: FakeHub, dest: Path) -> None:
    proc = run(hub.endpoint, dest)
    assert proc.returncode == 0, proc.stderr
    for m in I2V_SET:
        assert final(dest, m).read_bytes() == hub.files[(m.repo, m.repo_path)]
    assert leftovers(dest) == [] and len(list(dest.rglob("*.safetensors"))) == 6
    assert proc.stdout.count("fetched ") == 6


def test_sets_share_files_and_fetch_them_once(hub: FakeHub, dest: Path) -> None:
    proc = run(hub.endpoint, dest, "--set", "i2v-14b,t2v-14b,ti2v-5b,s2v-14b,animate-14b,postprocess")
    assert proc.returncode == 0, proc.stderr
    for m in MANIFEST:
        assert final(dest, m).read_bytes() == hub.files[(m.repo, m.repo_path)]
    assert proc.stdout.count("fetched ") == len(MANIFEST) == 22  # text encoder, 2.1 VAE and the T2V LoRA once
    gets = [g.path for g in hub.body_gets()]
    assert len(gets) == len(set(gets)) == 22
    again = run(hub.endpoint, dest, "--set", "all")
    assert again.returncode == 0
    assert sum(ln.startswith("present ") for ln in again.stdout.splitlines()) == 22


def test_a_second_set_fetches_only_what_the_first_lacks(hub: FakeHub, dest: Path) -> None:
    assert run(hub.endpoint, dest, "--set", "i2v-14b").returncode == 0
    proc = run(hub.endpoint, dest, "--set", "ti2v-5b")
    assert proc.returncode == 0, proc.stderr
    fetched = sorted(ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("fetched "))
    assert fetched == sorted(m.rel_path for m in MODEL_SETS["ti2v-5b"].files if m.folder != "text_encoders")
    assert "present  text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors" in proc.stdout


def test_unknown_set_and_set_with_only_are_clear_errors(hub: FakeHub, dest: Path, cli: Cli) -> None:
    code, _, err = cli(hub.endpoint, "--dest", str(dest), "--set", "i2v-14b,t2v-5b")
    assert code == 1 and "unknown: t2v-5b" in err and "i2v-14b, t2v-14b, ti2v-5b" in err
    code, _, err = cli(hub.endpoint, "--dest", str(dest), "--set", "t2v-14b", "--only", VAE.name)
    assert code == 1 and "--set or --only" in err
    assert not dest.exists()


def test_second_run_skips_everything(hub: FakeHub, dest: Path) -> None:
    seed(hub, dest)
    proc = run(hub.endpoint, dest)
    assert proc.returncode == 0, proc.stderr
    assert sum(line.startswith("present ") for line in proc.stdout.splitlines()) == 6
    assert hub.body_gets() == []
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_resume_after_cut_connection_on_the_next_run(hub: FakeHub, dest: Path) -> None:
    hub.cut_once[VAE.repo_path] = 1000
    first = run(hub.endpoint, dest, "--only", VAE.name, "--retries", "0")
    assert first.returncode == 1
    assert "run again" in error_line(first)
    part = final(dest, VAE).with_name(f".{VAE.name}.part")
    assert part.stat().st_size == 1000 and not final(dest, VAE).exists()

    second = run(hub.endpoint, dest, "--only", VAE.name)
    assert second.returncode == 0, second.stderr
    assert "bytes=1000-" in hub.ranges()
    assert final(dest, VAE).read_bytes() == hub.files[(VAE.repo, VAE.repo_path)]
    assert leftovers(dest) == []


def test_dropped_connection_resumes_within_the_run(hub: FakeHub, dest: Path, cli: Cli,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    hub.cut_once[VAE.repo_path] = 1234
    code, _, err = cli(hub.endpoint, "--dest", str(dest), "--only", VAE.name)
    assert code == 0, err
    assert "bytes=1234-" in hub.ranges()
    assert "connection lost at 1234" in caplog.text
    assert final(dest, VAE).read_bytes() == hub.files[(VAE.repo, VAE.repo_path)]


def test_wrong_sha256_is_rejected_and_nothing_is_left(hub: FakeHub, dest: Path) -> None:
    hub.corrupt.add(LORA.repo_path)
    proc = run(hub.endpoint, dest, "--only", LORA.name)
    assert proc.returncode == 1
    assert "Checksum mismatch" in error_line(proc)
    assert not final(dest, LORA).exists()
    assert leftovers(dest) == []


def test_damaged_file_under_the_final_name_is_replaced(hub: FakeHub, dest: Path,
                                                       cli: Cli) -> None:
    good = hub.files[(VAE.repo, VAE.repo_path)]
    final(dest, VAE).parent.mkdir(parents=True)
    final(dest, VAE).write_bytes(good[:-100])  # truncated, e.g. by an earlier copy
    code, out, err = cli(hub.endpoint, "--dest", str(dest), "--only", VAE.name)
    assert code == 0, err
    assert "replace " in out
    assert final(dest, VAE).read_bytes() == good


def test_verify_hashes_present_files_and_replaces_bitrot(hub: FakeHub, dest: Path,
                                                         cli: Cli) -> None:
    seed(hub, dest)
    good = final(dest, VAE).read_bytes()
    final(dest, VAE).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, header intact
    args = ("--dest", str(dest), "--only", VAE.name)

    assert "present " in cli(hub.endpoint, *args)[1]  # the everyday check trusts size + header
    code, out, err = cli(hub.endpoint, *args, "--verify")
    assert code == 0, err
    assert "sha256 differs" in out
    assert final(dest, VAE).read_bytes() == good


# --- failures -------------------------------------------------------------------------------------


def test_hub_unreachable_is_a_clear_error(dest: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    proc = run(endpoint, dest)
    assert proc.returncode == 1
    line = error_line(proc)
    assert endpoint in line and "HF_ENDPOINT" in line
    assert "Traceback" not in proc.stderr


def test_present_files_need_no_hub(hub: FakeHub, dest: Path, cli: Cli) -> None:
    seed(hub, dest)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    code, out, err = cli(endpoint, "--dest", str(dest))
    assert code == 0, err
    assert "could not compare with the hub" in out

    final(dest, VAE).unlink()
    assert cli(endpoint, "--dest", str(dest))[0] == 1


def test_token_required(hub: FakeHub, dest: Path) -> None:
    hub.token = TOKEN
    without = run(hub.endpoint, dest, "--only", VAE.name)
    assert without.returncode == 1
    assert "401" in error_line(without) and "set HF_TOKEN" in error_line(without)

    wrong = run(hub.endpoint, dest, "--only", VAE.name, HF_TOKEN="hf_wrong")
    assert wrong.returncode == 1 and "rejected HF_TOKEN" in error_line(wrong)

    with_token = run(hub.endpoint, dest, "--only", VAE.name, HF_TOKEN=TOKEN)
    assert with_token.returncode == 0, with_token.stderr
    assert final(dest, VAE).read_bytes() == hub.files[(VAE.repo, VAE.repo_path)]
    for proc in (without, wrong, with_token):
        assert TOKEN not in proc.stdout + proc.stderr
        assert "hf_wrong" not in proc.stdout + proc.stderr


def test_missing_file_on_the_hub_names_repo_and_path(hub: FakeHub, dest: Path, cli: Cli) -> None:
    del hub.files[(VAE.repo, VAE.repo_path)]
    code, _, err = cli(hub.endpoint, "--dest", str(dest), "--only", VAE.name)
    assert code == 1
    assert f"{VAE.repo}/{VAE.repo_path}" in err and "404" in err


def test_unknown_only_name(hub: FakeHub, dest: Path, cli: Cli) -> None:
    code, _, err = cli(hub.endpoint, "--dest", str(dest), "--only", "nope.safetensors")
    assert code == 1 and "nope.safetensors" in err


# --- dry run and the wrapper ----------------------------------------------------------------------


def test_dry_run_lists_six_files_and_a_total(hub: FakeHub, dest: Path) -> None:
    proc = run(hub.endpoint, dest, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("would fetch") == 6
    assert "total: 6 of 6 files to fetch" in proc.stdout
    total = sum(len(hub.files[(m.repo, m.repo_path)]) for m in I2V_SET)
    assert f"{total / models.GB:.2f} GB" in proc.stdout
    assert not dest.exists()
    assert hub.body_gets() == []


def test_dry_run_without_hub_uses_manifest_estimates(dest: Path, cli: Cli) -> None:
    code, out, err = cli(f"http://127.0.0.1:{closed_port()}", "--dest", str(dest), "--dry-run")
    assert code == 0, err
    assert out.count("would fetch") == 6
    assert "~14.30 GB" in out
    assert not dest.exists()


def test_wrapper_script_dry_run(hub: FakeHub, dest: Path) -> None:
    env = hub_env(hub.endpoint, dest.parent, WORKER_PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "download_models.sh"), "--dry-run",
                           "--dest", str(dest)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("would fetch") == 6
    assert not dest.exists()


# --- in-process pieces ----------------------------------------------------------------------------


def test_default_destination_is_the_first_dir_comfyui_searches(
        hub: FakeHub, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "runpod-slim" / "ComfyUI" / "models"
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"slim:\n  base_path: {base}\n  is_default: true\n  unet: unet\n"
                    "  diffusion_models: diffusion_models\n  loras: loras\n  clip: clip\n"
                    "  text_encoders: text_encoders\n  vae: vae\n"
                    f"other:\n  base_path: {tmp_path / 'other'}\n  vae: vae\n")
    monkeypatch.setenv("EXTRA_MODEL_PATHS", str(yaml))
    monkeypatch.setenv("COMFY_DIR", str(tmp_path / "comfyui"))

    code, out, err = cli(hub.endpoint, "--only", VAE.name, "--only", MANIFEST[0].rel_path)
    assert code == 0, err
    assert (base / "vae" / VAE.name).is_file()
    assert (base / "diffusion_models" / MANIFEST[0].name).is_file()  # not unet/, ComfyUI's 2nd


def test_header_check(tmp_path: Path, hub: FakeHub) -> None:
    good = hub.files[(VAE.repo, VAE.repo_path)]
    f = tmp_path / "x.safetensors"
    for data, ok in ((good, True), (good[:-1], False), (b"", False), (b"not safetensors", False)):
        f.write_bytes(data)
        assert download.header_ok(f) is ok
