"""wan-video against a stand-in of RunPod's hosted API (tests/fakerunpod.py) on 127.0.0.1.

Most tests call the client's main() in this process (the runpod SDK's base URL pointed at the
stand-in); Ctrl-C, the terminal bar and the console script run it as a real subprocess.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import png_b64, sigint_as_in_a_terminal
from tests.fakerunpod import (API_KEY, ENDPOINT_ID, MP4, PREPROCESSED, FakeRunPod, failed_script, png_bytes, progress_steps,
                              success_output, worker_script)
from wan_worker.client import cli
from wan_worker.client.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--poll", "0", "--retry-wait", "0.01"]


@pytest.fixture
def rp(monkeypatch: pytest.MonkeyPatch):
    import runpod

    with FakeRunPod() as fake:
        monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
        monkeypatch.setattr(runpod, "endpoint_url_base", fake.base_url)
        yield fake


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    path.write_bytes(base64.b64decode(png_b64()))
    return path


def wan(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--endpoint", ENDPOINT_ID, *FAST])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def progress_lines(err: str) -> list[str]:
    """`[   0s] sampling (high noise) 1/2 30%` -> `sampling (high noise) 1/2 30%`."""
    return [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[")]


def sent_inputs(fake: FakeRunPod) -> list[dict]:
    return [r.json["input"] for r in fake.requests if r.path.endswith("/run")]


# -- one job ---------------------------------------------------------------------------------

def test_image_to_mp4_with_every_state_in_order(rp, image, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code, stdout, stderr = wan(capsys, str(image), "the cat blinks", "-o", str(out), "--seed", "7")
    assert code == 0, stderr
    assert out.read_bytes() == MP4 and out.read_bytes()[4:8] == b"ftyp"
    assert not list(tmp_path.glob("*.part"))
    assert progress_lines(stderr) == [
        "sending", "queued", "running",
        "loading models 0%",
        "sampling (high noise) 1/2 30%", "sampling (high noise) 2/2 50%",
        "sampling (low noise) 1/2 70%", "sampling (low noise) 2/2 90%",
        "decoding 90%", "encoding 97%", "uploading 98%",
        "completed",
    ]
    assert f"saved {out} (" in stdout and "848x480, 81 frames at 16 fps" in stdout
    assert "seed 7" in stdout and "2.1 s queued" in stdout and "61.4 s running" in stdout
    [sent] = sent_inputs(rp)
    assert sent == {"image": base64.b64encode(image.read_bytes()).decode(), "prompt": "the cat blinks", "seed": 7}
    assert {r.authorization for r in rp.requests} == {f"Bearer {API_KEY}"}
    assert API_KEY not in stdout + stderr


def test_options_become_job_fields_and_only_given_ones_are_sent(rp, image, tmp_path, capsys):
    end = tmp_path / "end.png"
    end.write_bytes(png_bytes())
    code, _, stderr = wan(capsys, str(image), "p", "-o", str(tmp_path / "o.mp4"), "--end-image", str(end),
                          "--lora", "style.safetensors", "--lora", "hi.safetensors,lo.safetensors:0.6",
                          "--length", "49", "--fps", "24", "--resolution", "720p", "--model", "14b",
                          "--quality", "--width", "640", "--height", "368", "--steps", "8",
                          "--negative-prompt", "blurry", "--output-mode", "base64", "--timeout", "300",
                          "--interpolate", "3", "--upscaler", "default", "--upscale-factor", "1.5",
                          "--set", "cfg=2.5", "--set", "sampler=euler")
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent == {
        "image": base64.b64encode(image.read_bytes()).decode(), "prompt": "p",
        "end_image": base64.b64encode(end.read_bytes()).decode(),
        "loras": [{"name": "style.safetensors", "strength": 1.0},
                  {"high": "hi.safetensors", "low": "lo.safetensors", "high_strength": 0.6, "low_strength": 0.6}],
        "length": 49, "fps": 24.0, "resolution": "720p", "model": "14b", "fast": False,
        "width": 640, "height": 368, "steps": 8, "negative_prompt": "blurry", "output": "base64",
        "timeout_s": 300.0, "cfg": 2.5, "sampler": "euler",
        "num_interpolated_frames": 3, "upscaler": "default", "upscale_factor": 1.5,
    }


def test_url_image_is_sent_as_is_and_text_to_video_sends_no_image(rp, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert wan(capsys, "https://example.com/cat.jpg", "p")[0] == 0
    assert wan(capsys, "-", "a boat at sea")[0] == 0
    assert wan(capsys, "--prompt", "a boat at dawn")[0] == 0
    assert [i.get("image") for i in sent_inputs(rp)] == ["https://example.com/cat.jpg", None, None]
    assert [i["prompt"] for i in sent_inputs(rp)][1:] == ["a boat at sea", "a boat at dawn"]
    # without -o the worker's file name is used, in the working directory
    names = sorted(p.name for p in tmp_path.glob("wan_*_00001_.mp4"))
    assert len(names) == 3 and all((tmp_path / n).read_bytes() == MP4 for n in names)


@pytest.mark.parametrize("args, message", [
    (["cat.png"], "missing PROMPT"),
    (["cat.png", "p", "--prompt", "q"], "give the prompt once"),
    (["/nonexistent/cat.png", "p"], "No such file"),
    (["--prompt", "p", "--lora", "a,b,c"], "HIGH,LOW"),
    (["--prompt", "p", "--set", "novalue"], "KEY=VALUE"),
])
def test_usage_errors_exit_2_and_send_nothing(rp, capsys, args, message):
    code, _, stderr = wan(capsys, *args)
    assert code == 2 and message in stderr
    assert rp.requests == []


def test_missing_api_key_or_target_is_a_usage_error(rp, capsys, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    code, _, stderr = wan(capsys, "--prompt", "p")
    assert code == 2 and "RUNPOD_API_KEY" in stderr
    assert main(["--prompt", "p"]) == 2
    assert "--endpoint ID" in capsys.readouterr().err


def test_wrong_api_key_exits_3_without_printing_it(rp, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_wrong_secret_key")
    code, stdout, stderr = wan(capsys, "--prompt", "p")
    assert code == 3 and "401" in stderr and "RUNPOD_API_KEY" in stderr
    assert "rp_wrong_secret_key" not in stdout + stderr


def test_worker_failure_shows_code_sentence_and_fields_and_exits_1(rp, image, capsys):
    message = "Invalid input: `length` must be 4n+1 frames (e.g. 49, 81, 121); 77 is the nearest below."
    rp.script_for = lambda job_id, job_input: failed_script(
        "INVALID_INPUT", message, {"errors": [{"field": "length", "message": "must be 4n+1 frames"}]})
    code, stdout, stderr = wan(capsys, str(image), "p", "--length", "80", "--json")
    assert code == 1
    assert f"failed: INVALID_INPUT: {message}" in stderr and "  length: must be 4n+1 frames" in stderr
    result = json.loads(stdout)
    assert result["status"] == "FAILED" and result["error_code"] == "INVALID_INPUT" and result["error"] == message
    assert progress_lines(stderr)[-1] == "failed"


def test_sdk_crash_report_is_shortened_to_its_message(rp, capsys):
    crash = json.dumps({"error_type": "<class 'KeyError'>", "error_message": "'video'",
                        "error_traceback": "Traceback (most recent call last):\n  File ..."})
    rp.script_for = lambda job_id, job_input: [{"status": "FAILED", "error": crash}]
    code, _, stderr = wan(capsys, "--prompt", "p")
    assert code == 1 and "KeyError" in stderr and "'video'" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("status", ["CANCELLED", "TIMED_OUT"])
def test_cancelled_or_timed_out_elsewhere_exits_1(rp, capsys, status):
    rp.script_for = lambda job_id, job_input: [{"status": "IN_QUEUE"}, {"status": status}]
    code, _, stderr = wan(capsys, "--prompt", "p")
    assert code == 1 and ("cancelled" in stderr if status == "CANCELLED" else "timed" in stderr)


def test_json_prints_the_result_with_saved_paths_instead_of_base64(rp, image, tmp_path, capsys):
    out, last = tmp_path / "v.mp4", tmp_path / "last.png"
    code, stdout, _ = wan(capsys, str(image), "p", "-o", str(out), "--last-frame", str(last), "--json")
    assert code == 0
    result = json.loads(stdout)
    assert "video" not in result and "last_frame" not in result
    assert result["video_path"] == str(out) and result["last_frame_path"] == str(last)
    assert result["seed"] == 42 and result["timings_ms"]["execute"] == 61234.5
    assert result["client"]["queue_ms"] == 2150 and result["client"]["execution_ms"] == 61400
    assert sent_inputs(rp)[0]["return_last_frame"] is True
    assert last.read_bytes() == png_bytes() and out.read_bytes() == MP4


def test_wait_limit_cancels_the_job_and_exits_5(rp, capsys):
    rp.script_for = lambda job_id, job_input: [{"status": "IN_QUEUE"}]
    code = main(["--prompt", "p", "--endpoint", ENDPOINT_ID, "--poll", "0.05", "--wait", "0.3"])
    assert code == 5 and "--wait" in capsys.readouterr().err
    [job] = rp.jobs.values()
    assert job.cancelled and any(p.endswith(f"/cancel/{job.id}") for p in rp.paths("POST"))


# -- network trouble -------------------------------------------------------------------------

def test_503_429_and_dropped_connections_are_retried(rp, image, tmp_path, capsys):
    rp.fail(503, count=2, path_part="/run")
    rp.fail(429, count=1, path_part="/status", retry_after="0")
    rp.drop(count=2, path_part="/status")
    out = tmp_path / "out.mp4"
    code, _, stderr = wan(capsys, str(image), "p", "-o", str(out))
    assert code == 0, stderr
    assert out.read_bytes() == MP4
    assert stderr.count("sending the job: HTTP 503") == 2
    [job_id] = rp.jobs
    assert f"asking for the status of job {job_id}: HTTP 429" in stderr  # the id, to find the job later
    assert stderr.count(f"asking for the status of job {job_id}: connection dropped") == 2
    assert len(rp.jobs) == 1  # retrying /run after a 503 made no second job


def test_persistent_trouble_gives_a_clear_message_and_exits_3(rp, capsys):
    rp.fail(503, count=100, path_part="/run")
    code, _, stderr = wan(capsys, "--prompt", "p", "--retries", "2")
    assert code == 3
    assert "sending the job failed 3 times (HTTP 503" in stderr
    assert len(rp.paths("POST")) == 3


def test_unknown_endpoint_is_not_retried(rp, capsys):
    code = main(["--prompt", "p", "--endpoint", "nope", *FAST])
    assert code == 3 and "404" in capsys.readouterr().err
    assert len(rp.requests) == 1


# -- S3 URLs ---------------------------------------------------------------------------------

def test_video_url_from_a_real_s3_server_is_downloaded(rp, tmp_path, tmp_path_factory, capsys):
    from tests.s3server import s3_server
    from wan_worker import s3
    from wan_worker.settings import Settings

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        settings = Settings(bucket_endpoint_url=server.endpoint, bucket_access_key_id=server.access_key,
                            bucket_secret_access_key=server.secret_key, bucket_name=server.bucket)
        source = tmp_path / "video.mp4"
        source.write_bytes(MP4)
        url = s3.upload_file(source, "wan-worker/job/video.mp4", settings, "video/mp4").url
        assert "Signature=" in url and url.startswith("http://127.0.0.1:")
        last_url = rp.serve_file("last.png", png_bytes())
        rp.script_for = lambda job_id, job_input: [
            {"status": "IN_PROGRESS", "output": {"phase": "uploading", "percent": 98}},
            {"status": "COMPLETED", "output": success_output(job_id, job_input, url, last_url)}]
        out, last = tmp_path / "dl" / "out.mp4", tmp_path / "dl" / "last.png"
        code, stdout, stderr = wan(capsys, "--prompt", "p", "-o", str(out), "--last-frame", str(last),
                                   "--output-mode", "s3")
    assert code == 0, stderr
    assert out.read_bytes() == MP4 and last.read_bytes() == png_bytes()
    assert "downloading out.mp4" in stderr and "kB downloaded" in stderr
    assert "Signature" not in stdout + stderr  # presigned URLs are credentials for a week


def test_download_failure_exits_4_and_leaves_no_partial_file(rp, tmp_path, capsys):
    missing = f"{rp.url}/files/gone.mp4"
    rp.script_for = lambda job_id, job_input: [
        {"status": "COMPLETED", "output": success_output(job_id, job_input, missing)}]
    out = tmp_path / "out.mp4"
    code, _, stderr = wan(capsys, "--prompt", "p", "-o", str(out))
    assert code == 4 and "the job succeeded but" in stderr and "404" in stderr
    assert list(tmp_path.iterdir()) == []


# -- batch -----------------------------------------------------------------------------------

def test_batch_with_one_failure_prints_a_table_and_exits_1(rp, image, tmp_path, capsys):
    def script(job_id, job_input):
        if job_input["prompt"] == "breaks":
            return failed_script("IMAGE_UNREADABLE", "The image could not be read; send a PNG, JPEG or WebP.")
        return worker_script(job_id, job_input)

    rp.script_for = script
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([
        json.dumps({"input": {"image": image.name, "prompt": "the cat blinks"}, "output": "cat.mp4",
                    "last_frame": "cat-last.png"}),
        "# a comment, then a blank line",
        "",
        json.dumps({"image": "https://example.com/dog.jpg", "prompt": "the dog runs", "seed": 3}),
        json.dumps({"input": {"image": png_b64(), "prompt": "breaks"}, "name": "broken"}),
    ]) + "\n")
    out_dir = tmp_path / "out"
    code = main(["--jobs", str(jobs), "--out-dir", str(out_dir), "--concurrency", "2", "--seed", "11",
                 "--endpoint", ENDPOINT_ID, *FAST])
    captured = capsys.readouterr()
    assert code == 1
    assert (out_dir / "cat.mp4").read_bytes() == MP4 and (out_dir / "jobs-4.mp4").read_bytes() == MP4
    assert (out_dir / "cat-last.png").read_bytes() == png_bytes()
    assert not (out_dir / "broken.mp4").exists()
    rows = captured.out.splitlines()
    assert rows[0].split() == ["line", "job", "status", "seconds", "result"]
    cells = {r.split()[1]: r.split()[2] for r in rows[1:4]}
    assert cells == {"cat": "ok", "jobs-4": "ok", "broken": "failed"}
    assert "IMAGE_UNREADABLE: The image could not be read" in captured.out
    assert rows[-1] == "3 job(s): 2 ok, 1 failed"
    by_prompt = {i["prompt"]: i for i in sent_inputs(rp)}
    assert by_prompt["the cat blinks"]["image"] == base64.b64encode(image.read_bytes()).decode()
    assert by_prompt["the cat blinks"]["return_last_frame"] is True
    assert by_prompt["the dog runs"]["seed"] == 3 and by_prompt["breaks"]["seed"] == 11  # options are defaults
    assert "cat: sampling (low noise) 2/2 90%" in captured.err  # lines carry the job's name


def test_batch_file_errors_are_found_before_anything_is_sent(rp, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine"}\n{"prompt": "oops",}\n')
    assert main(["--jobs", str(jobs), "--endpoint", ENDPOINT_ID]) == 2
    assert "jobs.jsonl:2: not JSON" in capsys.readouterr().err
    jobs.write_text('{"input": {"prompt": "a"}, "output": "x.mp4"}\n{"input": {"prompt": "b"}, "output": "x.mp4"}\n')
    assert main(["--jobs", str(jobs), "--endpoint", ENDPOINT_ID]) == 2
    assert "also line 1" in capsys.readouterr().err
    jobs.write_text('{"input": {"prompt": "a"}, "webhook": "https://x"}\n')
    assert main(["--jobs", str(jobs), "--endpoint", ENDPOINT_ID]) == 2
    assert "unknown envelope key(s) webhook" in capsys.readouterr().err
    assert rp.requests == []


def test_batch_json_lines(rp, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    assert main(["--jobs", str(jobs), "--out-dir", str(tmp_path), "--json", "-q", "--endpoint", ENDPOINT_ID,
                 *FAST]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["name"], r["status"]) for r in lines] == [("jobs-1", "ok"), ("jobs-2", "ok")]
    assert lines[0]["result"]["video_path"] == str(tmp_path / "jobs-1.mp4") and "video" not in lines[0]["result"]
    assert "2 job(s): 2 ok" in captured.err


# -- as a real process: Ctrl-C, the terminal bar, the console script ---------------------------

def client_env(fake: FakeRunPod) -> dict[str, str]:
    return {**os.environ, "RUNPOD_API_KEY": fake.api_key, "RUNPOD_ENDPOINT_BASE_URL": fake.base_url}


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("batch", [False, True])
def test_ctrl_c_cancels_the_job_and_exits_130(tmp_path, batch):
    with FakeRunPod(script_for=lambda job_id, job_input: [{"status": "IN_QUEUE"}, *progress_steps()[:2]]) as fake:
        if batch:
            (tmp_path / "jobs.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n')
            args = ["--jobs", "jobs.jsonl", "--concurrency", "2"]
        else:
            args = ["--prompt", "a ship sails"]
        proc = subprocess.Popen([sys.executable, "-m", "wan_worker.client", *args, "--endpoint", ENDPOINT_ID,
                                 "--poll", "0.1"], cwd=tmp_path, env=client_env(fake),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_in_a_terminal)
        try:
            wait_for(lambda: len([p for p in fake.paths() if "/status/" in p]) >= 3 * (1 + batch))
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr
        cancelled = sorted(p.rsplit("/", 1)[1] for p in fake.paths("POST") if "/cancel/" in p)
        assert cancelled == sorted(fake.jobs) and len(cancelled) == 1 + batch
        assert all(job.cancelled for job in fake.jobs.values())
        assert "interrupted" in stderr and "cancelled job" in (stdout + stderr)
        if batch:  # two were running and are cancelled; the third was never sent
            assert [line.split()[2] for line in stdout.splitlines()[1:4]] == ["cancelled", "cancelled", "not"]
            assert stdout.splitlines()[-1] == "3 job(s): 2 cancelled, 1 not sent"


def test_terminal_shows_a_progress_bar(tmp_path):
    """stderr on a pseudo-terminal: tqdm draws the bar with the phase, step and elapsed time."""
    with FakeRunPod() as fake:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
        proc = subprocess.Popen([sys.executable, "-m", "wan_worker.client", "--prompt", "p", "-o", "out.mp4",
                                 "--endpoint", ENDPOINT_ID, "--poll", "0.05"],
                                cwd=tmp_path, env=client_env(fake),
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        screen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "no output from the client"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the client closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        os.close(master)
        stdout = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    text = screen.decode(errors="replace")
    assert "%|" in text and "00:0" in text  # tqdm's bar and elapsed time
    for shown in ("queued", "sampling (high noise) 1/2", "sampling (low noise) 2/2", "uploading", "completed"):
        assert shown in text
    assert "100%|" in text
    assert (tmp_path / "out.mp4").read_bytes() == MP4 and "saved out.mp4" in stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("wan-video")
    assert script.exists()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--endpoint" in proc.stdout
    for code in cli.EXIT_CODES:
        assert f"{code} " in proc.stdout


def test_the_runpod_sdk_itself_works_against_the_stand_in(rp):
    """The SDK was written against the real API; that it runs, streams and cancels against the
    stand-in checks the stand-in's routes and bodies from the other side."""
    import runpod

    rp.script_for = lambda job_id, job_input: [worker_script(job_id, job_input)[i] for i in (0, 3, 4, -1)]
    endpoint = runpod.Endpoint(ENDPOINT_ID, api_key=API_KEY)
    assert endpoint.health()["workers"]["idle"] == 1
    output = endpoint.run_sync({"prompt": "p", "seed": 5}, timeout=30)
    assert output["seed"] == 5 and base64.b64decode(output["video"]) == MP4
    job = endpoint.run({"input": {"prompt": "p"}})
    assert job.status() == "IN_QUEUE"
    streamed = list(job.stream())
    assert [s["seed"] for s in streamed] == [42] and job.status() == "COMPLETED"
    job = endpoint.run({"prompt": "q"})
    assert job.cancel()["status"] == "CANCELLED" and job.status() == "CANCELLED"


def test_the_client_page_documents_every_option_and_exit_code():
    section = (REPO / "docs/client.md").read_text()
    options = {s for action in cli.build_parser()._actions for s in action.option_strings if s.startswith("--")}
    missing = {o for o in options - {"--help"} if f"`{o}" not in section}
    assert not missing, f"document in docs/client.md: {sorted(missing)}"
    exit_table = section[section.index("**Exit codes.**"):section.index("**Batch.**")]
    assert {int(c) for c in re.findall(r"^\| (\d+) \|", exit_table, flags=re.M)} == set(cli.EXIT_CODES)


def test_target_from_the_environment_and_options_win(rp, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WAN_VIDEO_ENDPOINT", ENDPOINT_ID)
    assert main(["--prompt", "p", *FAST]) == 0
    monkeypatch.setenv("WAN_VIDEO_URL", "http://127.0.0.1:9")  # both in the environment: ambiguous
    assert main(["--prompt", "p", *FAST]) == 2
    assert "--endpoint ID (RunPod) or --url URL" in capsys.readouterr().err
    assert main(["--prompt", "p", "--endpoint", ENDPOINT_ID, *FAST]) == 0  # an option decides
    assert len(rp.jobs) == 2


def test_a_completed_job_whose_output_holds_an_error_is_a_failure(rp, capsys):
    """A worker that returns its error without the SDK's error path still fails the client."""
    rp.script_for = lambda job_id, job_input: [{"status": "COMPLETED", "output": {
        "error": "The GPU ran out of memory.", "error_code": "OUT_OF_MEMORY", "details": {"node_id": "57"}}}]
    code, stdout, stderr = wan(capsys, "--prompt", "p", "--json")
    assert code == 1 and "failed: OUT_OF_MEMORY: The GPU ran out of memory." in stderr
    assert json.loads(stdout)["details"] == {"node_id": "57"}


def test_retry_waits_follow_retry_after_or_double_with_a_cap():
    import email.utils

    import requests

    from wan_worker.client.api import RetryPolicy, _retry_after

    def answer(value: str | None) -> requests.Response:
        resp = requests.Response()
        if value is not None:
            resp.headers["Retry-After"] = value
        return resp

    policy = RetryPolicy(first_wait_s=1.0, max_wait_s=30.0)
    assert policy.wait_s(0, _retry_after(answer("7"))) == 7.0
    in_20_s = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 17 < policy.wait_s(0, _retry_after(answer(in_20_s))) <= 20
    assert policy.wait_s(0, _retry_after(answer("3600"))) == 30.0  # capped
    assert _retry_after(answer("soon")) is None and _retry_after(answer(None)) is None
    waits = [policy.wait_s(n) for n in range(7)]
    assert 0.8 <= waits[0] <= 1.2 and 3.2 <= waits[2] <= 4.8 and waits[6] == 30.0


def test_a_graph_of_parts_shows_which_part_runs():
    from wan_worker.client.display import State

    state = State.from_status({"status": "IN_PROGRESS", "output": {"phase": "sampling", "chunk": 2, "chunks": 3,
                                                                   "step": 1, "steps": 4, "percent": 43}})
    assert state.text() == "sampling chunk 2/3 1/4"
    window = State.from_status({"status": "IN_PROGRESS", "output": {"phase": "sampling", "window": 1, "windows": 2}})
    assert window.text() == "sampling window 1/2" and window.line_key() != state.line_key()
    assert State.from_status({"status": "IN_PROGRESS", "output": {"phase": "decoding"}}).text() == "decoding"


# -- sound-to-video ----------------------------------------------------------------------------

def test_audio_file_and_its_part_are_sent(rp, image, tmp_path, capsys):
    sound = tmp_path / "voice.wav"
    sound.write_bytes(b"RIFF0000WAVEfmt not really a wav, the worker checks it")
    code, _, stderr = wan(capsys, str(image), "she sings", "-o", str(tmp_path / "o.mp4"), "--audio", str(sound),
                          "--audio-start", "2.5", "--duration", "10")
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent == {"image": base64.b64encode(image.read_bytes()).decode(), "prompt": "she sings",
                    "audio": base64.b64encode(sound.read_bytes()).decode(), "audio_start_s": 2.5, "duration_s": 10.0}
    code, _, stderr = wan(capsys, str(image), "p", "--audio", str(tmp_path / "nope.mp3"))
    assert code == 2 and "audio " in stderr and "nope.mp3" in stderr
    assert wan(capsys, str(image), "p", "-o", str(tmp_path / "u.mp4"), "--audio", "https://example.com/a.mp3")[0] == 0
    assert sent_inputs(rp)[-1]["audio"] == "https://example.com/a.mp3"


def test_batch_lines_read_audio_files_beside_the_jobs_file(rp, image, tmp_path, capsys):
    sound = tmp_path / "song.mp3"
    sound.write_bytes(b"ID3 fake mp3")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"input": {"image": image.name, "audio": sound.name, "prompt": "sing"},
                                "output": "sing.mp4"}) + "\n")
    code = main(["--jobs", str(jobs), "--out-dir", str(tmp_path / "out"), "--endpoint", ENDPOINT_ID, *FAST])
    assert code == 0, capsys.readouterr()
    [sent] = sent_inputs(rp)
    assert sent["audio"] == base64.b64encode(sound.read_bytes()).decode()


def test_the_summary_says_chunks_and_sound():
    from wan_worker.client.results import _shape

    out = {"width": 640, "height": 640, "length": 197, "fps": 16.0, "duration_s": 12.312, "chunks": 3, "audio": True}
    assert _shape(out) == "640x640, 197 frames at 16 fps = 12.312 s in 3 chunks, with sound"
    assert _shape({**out, "chunks": 1, "audio": False}).endswith("= 12.312 s in 1 chunk")


# -- Animate -----------------------------------------------------------------------------------

def test_animate_videos_and_mode_are_sent(rp, image, tmp_path, capsys):
    files = {}
    for name in ("dance", "pose", "face", "bg", "mask"):
        files[name] = tmp_path / f"{name}.mp4"
        files[name].write_bytes(f"not really an mp4: {name}".encode())

    def enc(name: str) -> str:
        return base64.b64encode(files[name].read_bytes()).decode()

    code, _, stderr = wan(capsys, str(image), "she dances", "-o", str(tmp_path / "o.mp4"), "--video",
                          str(files["dance"]), "--pose-video", str(files["pose"]), "--face-video", str(files["face"]),
                          "--mode", "replace", "--background-video", str(files["bg"]), "--mask-video",
                          str(files["mask"]), "--no-relight")
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent == {"image": base64.b64encode(image.read_bytes()).decode(), "prompt": "she dances",
                    "video": enc("dance"), "pose_video": enc("pose"), "face_video": enc("face"), "mode": "replace",
                    "background_video": enc("bg"), "mask_video": enc("mask"), "relight": False}
    code, _, stderr = wan(capsys, str(image), "p", "--video", str(tmp_path / "nope.mp4"))
    assert code == 2 and "video " in stderr and "nope.mp4" in stderr


def test_the_summary_says_windows():
    from wan_worker.client.results import _shape

    out = {"width": 480, "height": 832, "length": 150, "fps": 16.0, "duration_s": 9.375, "windows": 3, "audio": True}
    assert _shape(out) == "480x832, 150 frames at 16 fps = 9.375 s in 3 windows, with sound"


def test_animate_pose_and_face_videos_the_worker_made_are_saved_beside_the_mp4(rp, image, tmp_path, capsys):
    dance = tmp_path / "dance.mp4"
    dance.write_bytes(b"not really an mp4: dance")
    out = tmp_path / "out.mp4"
    code, stdout, stderr = wan(capsys, str(image), "she dances", "-o", str(out), "--video", str(dance),
                               "--return-preprocessed", "--person", "1")
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent["return_preprocessed"] is True and sent["person"] == 1
    pose, face = tmp_path / "out_pose.mp4", tmp_path / "out_face.mp4"
    assert pose.read_bytes() == PREPROCESSED["pose_video"] and face.read_bytes() == PREPROCESSED["face_video"]
    assert f"saved {pose} (pose video the worker made)" in stdout and f"saved {face} (face video" in stdout

    code, stdout, _ = wan(capsys, str(image), "she dances", "-o", str(out), "--video", str(dance),
                          "--return-preprocessed", "--json")
    result = json.loads(stdout)
    assert code == 0 and "pose_video" not in result and "face_video" not in result  # no base64 printed
    assert (result["pose_video_path"], result["face_video_path"]) == (str(pose), str(face))


def test_animate_pose_and_face_video_urls_are_downloaded_beside_the_mp4(rp, tmp_path, capsys):
    urls = {key: rp.serve_file(f"{key}.mp4", data) for key, data in PREPROCESSED.items()}
    rp.script_for = lambda job_id, job_input: [
        {"status": "COMPLETED", "output": success_output(job_id, job_input, rp.serve_file("v.mp4", MP4),
                                                         preprocessed_urls=urls)}]
    out = tmp_path / "dl" / "clip.mp4"
    code, stdout, stderr = wan(capsys, "--prompt", "p", "-o", str(out), "--return-preprocessed",
                               "--output-mode", "s3")
    assert code == 0, stderr
    assert (tmp_path / "dl" / "clip_pose.mp4").read_bytes() == PREPROCESSED["pose_video"]
    assert (tmp_path / "dl" / "clip_face.mp4").read_bytes() == PREPROCESSED["face_video"]
    assert "downloading clip_pose.mp4" in stderr and "clip_face.mp4 (face video the worker made)" in stdout


def test_asking_for_preprocessed_videos_the_worker_did_not_make_is_noted(rp, image, tmp_path, capsys):
    rp.script_for = lambda job_id, job_input: [
        {"status": "COMPLETED", "output": success_output(job_id, {})}]
    code, _, stderr = wan(capsys, str(image), "p", "-o", str(tmp_path / "o.mp4"), "--return-preprocessed")
    assert code == 0 and "returned no pose or face video" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png", "o.mp4"]


def test_a_batch_jobs_preprocessed_videos_go_beside_its_output(rp, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"input": {"prompt": "one", "return_preprocessed": true}, "output": "dance.mp4"}\n')
    assert main(["--jobs", str(jobs), "--out-dir", str(tmp_path / "out"), "--json", "-q", "--endpoint",
                 ENDPOINT_ID, *FAST]) == 0
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["result"]["pose_video_path"] == str(tmp_path / "out" / "dance_pose.mp4")
    assert (tmp_path / "out" / "dance_face.mp4").read_bytes() == PREPROCESSED["face_video"]
