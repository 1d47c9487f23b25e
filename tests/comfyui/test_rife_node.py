"""The worker's RIFE node (comfyui_nodes/wan_worker_nodes/rife.py) on plain tensors, in ComfyUI's
interpreter (it has torch): the real 4.9 layout, loading without running code, the frames kept and
made, padding to the network's multiple and back, the warp the network is built on."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.comfyui.conftest import REPO, require_comfyui

NODE_DIR = REPO / "comfyui_nodes" / "wan_worker_nodes"


def check(code: str) -> str:
    """Run `code` with rife.py imported as `rife` and tests.tinywan as `tw`; its stdout."""
    _src, python = require_comfyui()
    prelude = (f"import sys, torch\nsys.path.insert(0, {str(NODE_DIR)!r})\nimport rife\n"
               "from tests import tinywan as tw\n")
    proc = subprocess.run([str(python), "-c", prelude + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_real_49_layout_is_the_size_of_rife49_pth():
    """IFNet as RIFE 4.7-4.9 build it (encode head; blocks of 192, 128, 96, 64 channels, 8 ResConvs
    each) holds 5.3 M float32 parameters: the 21.3 MB of the published rife49.pth."""
    out = check("""
        from torch import nn
        enc = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ConvTranspose2d(16, 4, 4, 2, 1))
        blocks = [rife.IFBlock(7 + 8, 192, 8, 6)] + [rife.IFBlock(12 + 8, c, 8, 6) for c in (128, 96, 64)]
        sd = rife.IFNet(blocks, enc).state_dict()
        again = rife.build_ifnet(sd)
        print(sum(v.numel() for v in sd.values()) * 4 / 1e6, len(sd), "block3.convblock.7.beta" in sd,
              "encode.1.weight" in sd, type(again.encode).__name__)
    """)
    megabytes, keys, *rest = out.split()
    assert float(megabytes) == pytest.approx(21.3, abs=0.05) and int(keys) == 124
    assert rest == ["True", "True", "Sequential"]


def test_frames_are_kept_and_made_between_each_pair_at_any_size():
    out = check("""
        net = rife.build_ifnet(tw.rife_state_dict(1))
        for factor in (2, 3, 4, 5):
            x = torch.rand(4, 37, 53, 3)  # no multiple of 32: padded, then cropped back
            y = rife.interpolate(net, x, factor)
            assert y.shape == ((4 - 1) * factor + 1, 37, 53, 3), y.shape
            assert torch.equal(y[::factor], x)
            assert 0 <= y.min() and y.max() <= 1
        one = torch.rand(1, 32, 32, 3)
        assert torch.equal(rife.interpolate(net, one, 2), one) and rife.interpolate(net, x, 1) is x
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_in_between_of_two_frames_lies_between_them():
    """With the tiny weights' near-zero flow and mask, RIFE blends: t=1/4 is nearer the first frame."""
    out = check("""
        net = rife.build_ifnet(tw.rife_state_dict(2))
        a, b = torch.zeros(1, 64, 64, 3), torch.ones(1, 64, 64, 3)
        y = rife.interpolate(net, torch.cat((a, b)), 4)
        print(" ".join(f"{float(y[k].mean()):.3f}" for k in range(5)))
    """)
    means = [float(v) for v in out.split()]
    assert means[0] == 0 and means[-1] == 1 and all(0.05 < m < 0.95 for m in means[1:4]), means


def test_warp_moves_an_image_by_its_flow():
    out = check("""
        img = torch.rand(1, 3, 16, 20)
        flow = torch.zeros(1, 2, 16, 20)
        flow[:, 0] = 2.0  # every pixel samples two to its right
        moved = rife.warp(img, flow)
        print(float((moved[..., :-2] - img[..., 2:]).abs().max()), float((rife.warp(img, flow * 0) - img).abs().max()))
    """)
    shifted, still = (float(v) for v in out.split())
    assert shifted < 1e-5 and still < 1e-5  # float32 grid arithmetic


def test_weights_load_without_running_code_and_odd_files_are_named(tmp_path):
    out = check(f"""
        import os, collections
        d = {str(tmp_path)!r}
        sd = tw.rife_state_dict(3)
        torch.save({{"module." + k: v for k, v in sd.items()}}, os.path.join(d, "flownet.pkl"))  # Practical-RIFE's
        net = rife.load_ifnet(os.path.join(d, "flownet.pkl"))
        print("prefix", type(net).__name__)
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + os.path.join(d, "ran"),))
        torch.save({{"w": Evil()}}, os.path.join(d, "evil.pth"))
        for name, data in (("evil.pth", None), ("half.pth", sd), ("junk.pth", b"junk")):
            path = os.path.join(d, name)
            if isinstance(data, dict):
                torch.save({{k: v for k, v in data.items() if not k.startswith("block3")}}, path)
            elif data is not None:
                open(path, "wb").write(data)
            try:
                rife.load_ifnet(path)
                print(name, "LOADED")
            except ValueError as exc:
                print(name, "|", exc)
        old = {{k: v for k, v in tw.rife_state_dict(4).items() if not k.startswith("encode")}}
        for n in range(4):  # 4.6: no encode head, so its blocks see 7 and 12 channels
            w = old[f"block{{n}}.conv0.0.0.weight"]
            old[f"block{{n}}.conv0.0.0.weight"] = w[:, :7] if n == 0 else w[:, :12]
        y = rife.interpolate(rife.build_ifnet(old), torch.rand(2, 32, 32, 3), 2)
        print("4.6", tuple(y.shape), os.path.exists(os.path.join(d, "ran")))
    """)
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines["prefix"] == "IFNet"
    assert "evil.pth cannot be read as weights only" in "evil.pth " + lines["evil.pth"]
    assert "expected blocks block0..block3" in lines["half.pth"]
    assert "cannot be read as weights only" in lines["junk.pth"]
    assert lines["4.6"] == "(3, 32, 32, 3) False"  # and the pickle's code never ran
