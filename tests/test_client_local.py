"""wan-video against the real runpod SDK's local API server running our worker (`--rp_serve_api`),
with the stand-in ComfyUI behind it: what `docker run ... --rp_serve_api` users get."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import png_b64, sigint_as_in_a_terminal
from tests.test_cli import api_server  # noqa: F401 - the worker's local API server, as a fixture
from tests.test_handler import two_image_workflow
from wan_worker.client.cli import main

FAST = ["--poll", "0", "--retry-wait", "0.05"]


@pytest.fixture
def fake(tmp_path, volume):
    """The stand-in lists the files on the test volume as ComfyUI does (every model set is there), so
    a prompt-only job's text-to-video graph validates too."""
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui", extra_model_paths_config=tmp_path / "extra_model_paths.yaml",
                   scan_models=True) as server:
        yield server


def write_png(path: Path) -> Path:
    path.write_bytes(base64.b64decode(png_b64()))
    return path


def test_dry_run_through_the_local_server(api_server, tmp_path, capsys, monkeypatch):  # noqa: F811
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    image = write_png(work / "cat.png")
    code = main([str(image), "the cat blinks", "--url", api_server, "--dry-run", "--seed", "5", "--json", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["dry_run"] is True and result["seed"] == 5 and (result["width"], result["height"]) == (848, 480)
    assert result["checks"]["image"] == {"width": 96, "height": 54, "format": "PNG"}
    assert result["checks"]["models"]["ok"] is True
    assert any(n["class_type"] == "SaveVideo" for n in result["workflow"].values())
    assert "running (a local server sends no progress)" in captured.err
    assert list(work.iterdir()) == [image]  # a dry run saves nothing


def test_image_to_mp4_through_the_local_server_and_comfyui(api_server, fake, tmp_path, capsys):  # noqa: F811
    image = write_png(tmp_path / "cat.png")
    out = tmp_path / "out.mp4"
    code = main([str(image), "the cat blinks", "--url", api_server, "-o", str(out), "--seed", "9",
                 "--length", "49", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_bytes() == fake.mp4_bytes and out.read_bytes()[4:8] == b"ftyp"
    assert "848x480, 49 frames at 16 fps" in captured.out and "seed 9" in captured.out
    [queued] = [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"]
    assert {n["inputs"]["noise_seed"] for n in queued["prompt"].values()
            if n["class_type"] == "KSamplerAdvanced"} == {9}


def test_worker_errors_come_back_through_the_local_server(api_server, fake, tmp_path, capsys):  # noqa: F811
    image = write_png(tmp_path / "cat.png")
    assert main([str(image), "p", "--url", api_server, "--length", "80", *FAST]) == 1
    assert "`length` must be 4n+1" in capsys.readouterr().err
    # a prompt alone is text-to-video (the worker decides): it runs the T2V graph
    assert main(["--prompt", "a boat at sea", "--url", api_server, "-o", str(tmp_path / "boat.mp4"), *FAST]) == 0
    capsys.readouterr()
    assert (tmp_path / "boat.mp4").read_bytes() == fake.mp4_bytes
    assert main(["--prompt", "a boat at sea", "--url", api_server, "--length", "80", *FAST]) == 1
    assert "`length` must be 4n+1" in capsys.readouterr().err
    fake.fail_on(class_type="KSamplerAdvanced", exception_type="torch.OutOfMemoryError",
                 exception_message="Allocation on device 0 would exceed allowed memory. (out of memory)")
    assert main([str(image), "p", "--url", api_server, *FAST]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err.lower() and "smaller" in err


def test_batch_through_the_local_server_with_workflow_mode(api_server, fake, tmp_path, capsys):  # noqa: F811
    """A batch line may be a worker-comfyui workflow job; its outputs are saved next to each other."""
    write_png(tmp_path / "first.png")
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64(fmt="JPEG")}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"input": {"image": "first.png", "prompt": "waves"}, "output": "i2v.mp4"}) + "\n"
                    + json.dumps({"input": {"workflow": two_image_workflow(), "images": images}, "output": "wf.mp4"})
                    + "\n")
    out_dir = tmp_path / "out"
    code = main(["--jobs", str(jobs), "--out-dir", str(out_dir), "--url", api_server, "--concurrency", "2", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert (out_dir / "i2v.mp4").read_bytes() == fake.mp4_bytes
    saved = sorted(p.name for p in out_dir.glob("wf_*"))
    assert len(saved) == 2 and {Path(n).suffix for n in saved} == {".mp4", ".png"}
    assert next(out_dir.glob("wf_*.mp4")).read_bytes() == fake.mp4_bytes
    assert next(out_dir.glob("wf_*.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 job(s): 2 ok" in captured.out


def test_worker_start_up_does_not_import_the_client():
    code = ("import sys, wan_worker.__main__, wan_worker.handler; "
            "print(sorted(m for m in sys.modules if m.startswith('wan_worker.client') or m == 'tqdm'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "wan_worker.client" not in proc.stdout


def test_wait_limit_on_a_local_server_says_the_job_goes_on(api_server, fake, tmp_path, capsys):  # noqa: F811
    image = write_png(tmp_path / "cat.png")
    fake.stall_on(class_type="KSamplerAdvanced")
    code = main([str(image), "p", "--url", api_server, "--wait", "0.5", *FAST])
    err = capsys.readouterr().err
    fake.reset()  # the stalled node finishes, so the worker can stop promptly
    assert code == 5
    assert "did not end within --wait 0.5 s" in err and "cannot cancel" in err


def test_ctrl_c_against_a_local_server_leaves_at_once(api_server, fake, tmp_path):  # noqa: F811
    """The job runs inside the blocking /status request; Ctrl-C must still end the client (130)."""
    import os
    import signal
    import time

    write_png(tmp_path / "cat.png")
    fake.stall_on(class_type="KSamplerAdvanced")
    proc = subprocess.Popen([sys.executable, "-m", "wan_worker.client", "cat.png", "p", "--url", api_server],
                            cwd=tmp_path, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 20
        while not any(r.path == "/prompt" for r in fake.requests):  # the worker is on the job
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - started < 5
    assert "interrupted" in stderr and "cannot cancel" in stderr
    fake.reset()  # the stalled node finishes, so the worker can stop promptly
