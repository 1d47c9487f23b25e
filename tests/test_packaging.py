"""The bundled graphs live once, in workflows/ at the repository root; a built wheel carries them
and a non-editable install finds them (as the Docker image does)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_the_graphs_and_an_installed_worker_finds_them(tmp_path: Path) -> None:
    source = tmp_path / "source"  # what the Dockerfile's build stage copies, so the repo stays clean
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for folder in ("src", "workflows"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = out.glob("wan_worker-*.whl")
    graphs = sorted(p.name for p in (REPO / "workflows").glob("*.json"))
    with zipfile.ZipFile(wheel) as zf:
        packed = {n: zf.read(n) for n in zf.namelist() if n.startswith("wan_worker/workflows/")}
    assert sorted(Path(n).name for n in packed) == graphs
    with zipfile.ZipFile(wheel) as zf:
        modules = {n for n in zf.namelist() if n.endswith(".py")}
    sources = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "wan_worker").rglob("*.py")}
    assert sources <= modules, f"not in the wheel (add the package to pyproject.toml): {sorted(sources - modules)}"
    for name, data in packed.items():
        assert data == (REPO / "workflows" / Path(name).name).read_bytes()

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:  # a wheel install is an unzip; no network, no dependencies needed
        zf.extractall(site)
    check = ("from wan_worker.settings import load_settings; from wan_worker.graphs import GRAPHS; "
             "from wan_worker.workflow import load_workflow; s = load_settings({}); "
             "print(s.workflows_path); [load_workflow(g, s.workflows_path) for g in GRAPHS]")
    run = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == Path(site) / "wan_worker" / "workflows"
