"""tests/tinywan against ComfyUI's own model code: the layouts we write by hand are exactly the
state dicts of ComfyUI's WanModel (I2V and T2V experts, the TI2V 5B model), its WanModel_S2V, its
Wan 2.1 VAE and its Wan 2.2 VAE (as sd.py configures each), its wav2vec2 large audio encoder (as
audio_encoders.py configures it), its AnimateWanModel and its CLIP vision H (clip_vision_config_h.json),
and the files are deterministic from a seed."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.comfyui.conftest import REPO, require_comfyui

COMPARE = """
import json, sys
sys.path.insert(0, {src!r})
import comfy.cli_args
comfy.cli_args.args.cpu = True  # no GPU here; ComfyUI's device probe must not look for one
import comfy.ops
from comfy.ldm.wan.model import WanModel, WanModel_S2V
from comfy.ldm.wan.model_animate import AnimateWanModel
from comfy.clip_model import CLIPVisionModelProjection
from comfy.audio_encoders.wav2vec2 import Wav2Vec2Model
from comfy.ldm.wan.vae import WanVAE
from comfy.ldm.wan.vae2_2 import WanVAE as WanVAE22
import torch
sys.path.insert(0, {repo!r})
import importlib.util
spec = importlib.util.spec_from_file_location("tinywan", {tinywan!r})
tw = importlib.util.module_from_spec(spec); spec.loader.exec_module(tw)

def shapes(module):
    return {{k: list(v.shape) for k, v in module.state_dict().items()}}

def dit(in_dim, out_dim):
    return WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=in_dim, dim=tw.DIM,
                    ffn_dim=tw.FFN, freq_dim=tw.FREQ_DIM, text_dim=tw.TEXT_DIM, out_dim=out_dim, num_heads=1,
                    num_layers=tw.LAYERS, device="meta", operations=comfy.ops.disable_weight_init)

with torch.device("meta"):
    s2v = WanModel_S2V(patch_size=(1, 2, 2), text_len=512, in_dim=tw.T2V_IN_DIM, dim=tw.DIM, ffn_dim=tw.FFN,
                       freq_dim=tw.FREQ_DIM, text_dim=tw.TEXT_DIM, out_dim=tw.OUT_DIM, num_heads=1,
                       num_layers=tw.LAYERS, operations=comfy.ops.disable_weight_init)
    animate = AnimateWanModel(patch_size=(1, 2, 2), text_len=512, in_dim=tw.I2V_IN_DIM, dim=tw.DIM, ffn_dim=tw.FFN,
                              freq_dim=tw.FREQ_DIM, text_dim=tw.TEXT_DIM, out_dim=tw.OUT_DIM, num_heads=1,
                              num_layers=tw.ANIMATE_LAYERS, operations=comfy.ops.disable_weight_init)
    clip_h = CLIPVisionModelProjection(json.load(open({clip_h!r})), None, None, comfy.ops.manual_cast)
    w2v = Wav2Vec2Model(embed_dim=1024, num_heads=16, num_layers=24, conv_norm=True, conv_bias=True,
                        do_normalize=True, do_stable_layer_norm=True, operations=comfy.ops.manual_cast)
w2v_small, w2v_big = tw.wav2vec2_shapes()
clip_small, clip_big = tw.clip_vision_h_shapes()
kernels = {{k: list(v.shape) for k, v in tw.animate_kernels().items()}}
config = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
              dropout=0.0)
vae = WanVAE(dim=96, z_dim=16, **config)
with torch.device("meta"):  # ~700 M parameters: shapes only
    vae22 = WanVAE22(dim=160, z_dim=48, **config)
pairs = {{
    "i2v expert": (dit(tw.I2V_IN_DIM, tw.OUT_DIM), tw.dit_shapes()),
    "t2v expert": (dit(tw.T2V_IN_DIM, tw.OUT_DIM), tw.dit_shapes(tw.T2V_IN_DIM)),
    "ti2v 5B": (dit(tw.TI2V_DIM, tw.TI2V_DIM), tw.dit_shapes(tw.TI2V_DIM, tw.TI2V_DIM)),
    "vae 2.1": (vae, tw.vae21_shapes()),
    "vae 2.2": (vae22, tw.vae22_shapes()),
    "s2v": (s2v, tw.s2v_shapes()),
    "wav2vec2 large": (w2v, {{**w2v_small, **w2v_big}}),
    "animate": (animate, {{**tw.animate_shapes(), **kernels}}),
    "clip vision h": (clip_h, {{**clip_small, **clip_big}}),
}}
print(json.dumps({{name: [shapes(m), {{k: list(v) for k, v in ours.items()}}] for name, (m, ours) in pairs.items()}}))
"""


def test_layouts_are_comfyuis_own_state_dicts():
    src, python = require_comfyui()
    code = COMPARE.format(src=str(src), repo=str(REPO), tinywan=str(REPO / "tests" / "tinywan.py"),
                          clip_h=str(src / "comfy" / "clip_vision_config_h.json"))
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (comfy, ours) in result.items():
        assert comfy == ours, (name, set(comfy) ^ set(ours),
                               {k for k in comfy if k in ours and comfy[k] != ours[k]})


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def test_files_are_deterministic_from_the_seed(tmp_path: Path):
    _, python = require_comfyui()

    def make(folder: Path, seed: int) -> dict[str, str]:
        subprocess.run([str(python), "-m", "tests.tinywan", str(folder), "--seed", str(seed)], cwd=REPO,
                       check=True, capture_output=True, timeout=300)
        return digests(folder)

    first, again, other = make(tmp_path / "a", 1), make(tmp_path / "b", 1), make(tmp_path / "c", 2)
    assert len(first) == 18 and first == again  # every safetensors file of every set (the 2 ONNX files are placeholders)
    # the text encoder holds no random weights (norms 1, biases 0, zeros): only it may repeat
    assert [k for k in first if first[k] == other[k]] == ["text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
