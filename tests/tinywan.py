"""Tiny stand-ins of the Wan2.2 model files, with the real key layout, for the real-ComfyUI tier.

ComfyUI recognises a model by its tensor names and shapes (comfy/model_detection.py, comfy/sd.py),
so files with the real layout at tiny sizes make the real ComfyUI execute our graphs in seconds on
a CPU. What each file must hold (and why) is written beside its builder below; every file is
deterministic from a seed. Written by hand from ComfyUI's model code, not by importing it, so the
tier also proves that our idea of each layout matches what ComfyUI loads.

Needs torch, safetensors and sentencepiece: run it with ComfyUI's interpreter,
`python -m tests.tinywan DIR [--seed N]` from the repository root (DIR gets one folder per model
folder, as a volume has them). The file names come from the worker's manifest.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import struct
import sys
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

Shapes = dict[str, tuple[int, ...]]

# The tiny DiT: one attention head of 128 (ComfyUI derives heads as dim // 128), two blocks.
DIM, FFN, LAYERS, OUT_DIM, TEXT_DIM, FREQ_DIM = 128, 256, 2, 16, 4096, 256
I2V_IN_DIM = 36  # 16 noise + 4 mask + 16 image latent channels: what Wan2.2 I2V 14B experts take
T2V_IN_DIM = 16  # the T2V 14B experts take the noise latent alone
TI2V_DIM = 48  # the 5B model works in the Wan2.2 VAE's 48-channel latent, in and out
LORA_RANK = 4

# The S2V model's audio side, which ComfyUI builds at fixed sizes whatever the DiT's dim
# (comfy/ldm/wan/model.py WanModel_S2V): wav2vec2-large features (1024 wide, 25 hidden states), 4
# audio tokens, 12 audio injectors (one per listed layer, built even past the tiny model's 2 layers).
S2V_AUDIO_DIM, S2V_AUDIO_LAYERS, S2V_AUDIO_TOKENS, S2V_INJECTORS = 1024, 25, 4, 12
# wav2vec2 large, the config ComfyUI picks from encoder.layer_norm.bias's size (audio_encoders.py)
W2V_DIM, W2V_LAYERS, W2V_FF, W2V_CONV, W2V_POS_KERNEL, W2V_POS_GROUPS = 1024, 24, 4096, 512, 128, 16

# The Animate model: 5 DiT blocks (one face adapter block per 5), its motion encoder's fixed 512
# features; CLIP vision ViT-H (clip_vision_config_h.json), whose features img_emb reads.
ANIMATE_LAYERS, MOTION_DIM = 5, 512
CLIP_H_DIM, CLIP_H_FF = 1280, 5120

# UMT5-XXL, whose config ComfyUI fixes (comfy/text_encoders/umt5_config_xxl.json).
T5_LAYERS, T5_DIM, T5_FF, T5_HEADS, T5_BUCKETS = 24, 4096, 10240, 64, 32
TOKENIZER_TEXT = (
    "a cat turns its head and blinks slowly in the warm light",
    "the camera pans across a quiet street at dawn with soft fog",
    "waves roll onto the beach while birds fly over the water",
    "a red car drives down a winding mountain road in autumn",
    "bright colors, overexposed, static, blurred details, subtitles, low quality",
    "a person walks through a forest, leaves falling around them",
)


# ------------------------------------------------------------------ layouts (name -> shape)

def _linear(name: str, out_f: int, in_f: int) -> Shapes:
    return {f"{name}.weight": (out_f, in_f), f"{name}.bias": (out_f,)}


def dit_shapes(in_dim: int = I2V_IN_DIM, out_dim: int = OUT_DIM, layers: int = LAYERS) -> Shapes:
    """comfy.ldm.wan.model.WanModel without img_emb: what the Wan2.2 14B experts are (and, with
    in_dim = out_dim = 48, the TI2V 5B model: ComfyUI picks WAN22_T2V by out_dim 48)."""
    s: Shapes = {"patch_embedding.weight": (DIM, in_dim, 1, 2, 2), "patch_embedding.bias": (DIM,)}
    s |= _linear("text_embedding.0", DIM, TEXT_DIM) | _linear("text_embedding.2", DIM, DIM)
    s |= _linear("time_embedding.0", DIM, FREQ_DIM) | _linear("time_embedding.2", DIM, DIM)
    s |= _linear("time_projection.1", DIM * 6, DIM)
    for i in range(layers):
        b = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                s |= _linear(f"{b}.{attn}.{proj}", DIM, DIM)
            s[f"{b}.{attn}.norm_q.weight"] = (DIM,)
            s[f"{b}.{attn}.norm_k.weight"] = (DIM,)
        s |= {f"{b}.norm3.weight": (DIM,), f"{b}.norm3.bias": (DIM,)}
        s |= _linear(f"{b}.ffn.0", FFN, DIM) | _linear(f"{b}.ffn.2", DIM, FFN)
        s[f"{b}.modulation"] = (1, 6, DIM)
    s |= _linear("head.head", out_dim * 4, DIM)  # out_dim * patch (1x2x2)
    s["head.modulation"] = (1, 2, DIM)
    return s


def s2v_shapes() -> Shapes:
    """comfy.ldm.wan.model.WanModel_S2V at tiny dim: the T2V-style DiT (in_dim 16) plus the audio
    encoder (MotionEncoder_tc with its global branch: `casual_audio_encoder.encoder.final_linear` is
    how ComfyUI detects S2V), the condition encoder, the audio injectors with their AdaLN layers
    (adain_mode attn_norm: no output layers) and the frame packer's three patch convs."""
    s = dit_shapes(T2V_IN_DIM)
    s["trainable_cond_mask.weight"] = (3, DIM)
    enc = "casual_audio_encoder.encoder"
    s["casual_audio_encoder.weights"] = (1, S2V_AUDIO_LAYERS, 1, 1)
    s |= {f"{enc}.conv1_local.conv.weight": (DIM // 4 * S2V_AUDIO_TOKENS, S2V_AUDIO_DIM, 3),
          f"{enc}.conv1_local.conv.bias": (DIM // 4 * S2V_AUDIO_TOKENS,),
          f"{enc}.conv1_global.conv.weight": (DIM // 4, S2V_AUDIO_DIM, 3), f"{enc}.conv1_global.conv.bias": (DIM // 4,),
          f"{enc}.conv2.conv.weight": (DIM // 2, DIM // 4, 3), f"{enc}.conv2.conv.bias": (DIM // 2,),
          f"{enc}.conv3.conv.weight": (DIM, DIM // 2, 3), f"{enc}.conv3.conv.bias": (DIM,),
          f"{enc}.padding_tokens": (1, 1, 1, DIM)}
    s |= _linear(f"{enc}.final_linear", DIM, DIM)
    s |= {"cond_encoder.weight": (DIM, OUT_DIM, 1, 2, 2), "cond_encoder.bias": (DIM,)}
    for i in range(S2V_INJECTORS):
        inj = f"audio_injector.injector.{i}"
        for proj in "qkvo":
            s |= _linear(f"{inj}.{proj}", DIM, DIM)
        s |= {f"{inj}.norm_q.weight": (DIM,), f"{inj}.norm_k.weight": (DIM,)}
        s |= _linear(f"audio_injector.injector_adain_layers.{i}.linear", DIM * 2, DIM)
    for name, k in (("proj", (1, 2, 2)), ("proj_2x", (2, 4, 4)), ("proj_4x", (4, 8, 8))):
        s |= {f"frame_packer.{name}.weight": (DIM, OUT_DIM, *k), f"frame_packer.{name}.bias": (DIM,)}
    return s


def animate_shapes() -> Shapes:
    """comfy.ldm.wan.model_animate.AnimateWanModel at tiny dim: the I2V-style DiT (in_dim 36) with
    the CLIP-vision side of Wan 2.1 I2V (img_emb from ViT-H's 1280 features, k_img/v_img in every
    cross attention), the pose patch embedding, one face adapter block per 5 DiT blocks
    (`face_adapter.fuser_blocks.0.k_norm` is how ComfyUI detects Animate, so 5 blocks), the face
    encoder (4 heads of 1024 over the 512 motion features) and the motion encoder, whose StyleGAN2
    encoder of 512x512 face crops is built at fixed size whatever the DiT's dim."""
    s = dit_shapes(I2V_IN_DIM, layers=ANIMATE_LAYERS)
    for i in range(ANIMATE_LAYERS):
        b = f"blocks.{i}.cross_attn"
        s |= _linear(f"{b}.k_img", DIM, DIM) | _linear(f"{b}.v_img", DIM, DIM)
        s[f"{b}.norm_k_img.weight"] = (DIM,)
    s |= {"img_emb.proj.0.weight": (CLIP_H_DIM,), "img_emb.proj.0.bias": (CLIP_H_DIM,)}
    s |= _linear("img_emb.proj.1", CLIP_H_DIM, CLIP_H_DIM) | _linear("img_emb.proj.3", DIM, CLIP_H_DIM)
    s |= {"img_emb.proj.4.weight": (DIM,), "img_emb.proj.4.bias": (DIM,)}
    s |= {"pose_patch_embedding.weight": (DIM, OUT_DIM, 1, 2, 2), "pose_patch_embedding.bias": (DIM,)}
    for j in range(ANIMATE_LAYERS // 5):
        f = f"face_adapter.fuser_blocks.{j}"
        s |= _linear(f"{f}.linear1_kv", DIM * 2, DIM) | _linear(f"{f}.linear1_q", DIM, DIM)
        s |= _linear(f"{f}.linear2", DIM, DIM)
        s |= {f"{f}.q_norm.weight": (DIM // (DIM // 128),), f"{f}.k_norm.weight": (DIM // (DIM // 128),)}
    enc = "face_encoder"
    s |= {f"{enc}.conv1_local.conv.weight": (1024 * 4, MOTION_DIM, 3), f"{enc}.conv1_local.conv.bias": (1024 * 4,),
          f"{enc}.conv2.conv.weight": (1024, 1024, 3), f"{enc}.conv2.conv.bias": (1024,),
          f"{enc}.conv3.conv.weight": (1024, 1024, 3), f"{enc}.conv3.conv.bias": (1024,),
          f"{enc}.padding_tokens": (1, 1, 1, DIM)}
    s |= _linear(f"{enc}.out_proj", DIM, 1024)
    app = "motion_encoder.enc.net_app.convs"
    s |= {f"{app}.0.0.weight": (32, 3, 1, 1), f"{app}.0.1.bias": (1, 32, 1, 1)}
    chans = (32, 64, 128, 256, 512, 512, 512, 512)
    for n, (c_in, c_out) in enumerate(zip(chans, chans[1:]), start=1):
        r = f"{app}.{n}"
        s |= {f"{r}.conv1.0.weight": (c_in, c_in, 3, 3), f"{r}.conv1.1.bias": (1, c_in, 1, 1),
              f"{r}.conv2.1.weight": (c_out, c_in, 3, 3), f"{r}.conv2.2.bias": (1, c_out, 1, 1),
              f"{r}.skip.1.weight": (c_out, c_in, 1, 1)}
    s[f"{app}.8.weight"] = (MOTION_DIM, 512, 4, 4)
    for k in range(5):
        s |= _linear(f"motion_encoder.enc.fc.{k}", MOTION_DIM if k < 4 else 20, MOTION_DIM)
    s["motion_encoder.dec.direction.weight"] = (MOTION_DIM, 20)
    return s


def clip_vision_h_shapes() -> tuple[Shapes, Shapes]:
    """CLIP ViT-H/14 as ComfyUI loads it (clip_vision_config_h.json, picked by
    `vision_model.encoder.layers.30`): (the small tensors: embeddings, norms, biases, the projection;
    the 32 layers' matrices, which a stand-in keeps at zero: each layer adds nothing, so the output
    is the normalised patch embeddings, which still follow the image)."""
    v = "vision_model"
    small: Shapes = {f"{v}.embeddings.class_embedding": (CLIP_H_DIM,),
                     f"{v}.embeddings.patch_embedding.weight": (CLIP_H_DIM, 3, 14, 14),
                     f"{v}.embeddings.position_embedding.weight": (257, CLIP_H_DIM),
                     f"{v}.pre_layrnorm.weight": (CLIP_H_DIM,), f"{v}.pre_layrnorm.bias": (CLIP_H_DIM,),
                     f"{v}.post_layernorm.weight": (CLIP_H_DIM,), f"{v}.post_layernorm.bias": (CLIP_H_DIM,),
                     "visual_projection.weight": (1024, CLIP_H_DIM)}
    big: Shapes = {}
    for i in range(32):
        layer = f"{v}.encoder.layers.{i}"
        for norm in ("layer_norm1", "layer_norm2"):
            small |= {f"{layer}.{norm}.weight": (CLIP_H_DIM,), f"{layer}.{norm}.bias": (CLIP_H_DIM,)}
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            small[f"{layer}.self_attn.{proj}.bias"] = (CLIP_H_DIM,)
            big[f"{layer}.self_attn.{proj}.weight"] = (CLIP_H_DIM, CLIP_H_DIM)
        small |= {f"{layer}.mlp.fc1.bias": (CLIP_H_FF,), f"{layer}.mlp.fc2.bias": (CLIP_H_DIM,)}
        big |= {f"{layer}.mlp.fc1.weight": (CLIP_H_FF, CLIP_H_DIM), f"{layer}.mlp.fc2.weight": (CLIP_H_DIM, CLIP_H_FF)}
    return small, big


def wav2vec2_shapes() -> tuple[Shapes, Shapes]:
    """comfy.audio_encoders.wav2vec2.Wav2Vec2Model as the large config builds it: (the small tensors:
    conv front end, projection, norms, biases, the positional conv; the transformer's matrices, 24 x
    12.6 M parameters). The positional conv is a plain torch Conv1d under weight_norm, so its keys are
    the parametrization's (original0 = g, original1 = v)."""
    small: Shapes = {}
    for i, (c_in, k) in enumerate([(1, 10)] + [(W2V_CONV, 3)] * 4 + [(W2V_CONV, 2)] * 2):
        layer = f"feature_extractor.conv_layers.{i}"
        small |= {f"{layer}.conv.weight": (W2V_CONV, c_in, k), f"{layer}.conv.bias": (W2V_CONV,),
                  f"{layer}.layer_norm.weight": (W2V_CONV,), f"{layer}.layer_norm.bias": (W2V_CONV,)}
    small |= {"feature_projection.layer_norm.weight": (W2V_CONV,), "feature_projection.layer_norm.bias": (W2V_CONV,)}
    small |= _linear("feature_projection.projection", W2V_DIM, W2V_CONV)
    small["masked_spec_embed"] = (W2V_DIM,)
    pos = "encoder.pos_conv_embed.conv"
    small |= {f"{pos}.parametrizations.weight.original0": (1, 1, W2V_POS_KERNEL),
              f"{pos}.parametrizations.weight.original1": (W2V_DIM, W2V_DIM // W2V_POS_GROUPS, W2V_POS_KERNEL),
              f"{pos}.bias": (W2V_DIM,), "encoder.layer_norm.weight": (W2V_DIM,), "encoder.layer_norm.bias": (W2V_DIM,)}
    big: Shapes = {}
    for i in range(W2V_LAYERS):
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            big[f"{layer}.attention.{proj}.weight"] = (W2V_DIM, W2V_DIM)
            small[f"{layer}.attention.{proj}.bias"] = (W2V_DIM,)
        big[f"{layer}.feed_forward.intermediate_dense.weight"] = (W2V_FF, W2V_DIM)
        big[f"{layer}.feed_forward.output_dense.weight"] = (W2V_DIM, W2V_FF)
        small |= {f"{layer}.feed_forward.intermediate_dense.bias": (W2V_FF,),
                  f"{layer}.feed_forward.output_dense.bias": (W2V_DIM,)}
        for norm in ("layer_norm", "final_layer_norm"):
            small |= {f"{layer}.{norm}.weight": (W2V_DIM,), f"{layer}.{norm}.bias": (W2V_DIM,)}
    return small, big


def lora_shapes(rank: int = LORA_RANK) -> Shapes:
    """A LoRA for every Linear of the DiT's blocks (down/up/alpha), diff_b for their biases and
    diff for the norms: the keys comfy/lora.py maps to a Wan model, all of them applied."""
    s: Shapes = {}
    for name, shape in dit_shapes().items():
        if not name.startswith("blocks.") or name.endswith(".modulation"):
            continue
        key = "diffusion_model." + name.rsplit(".", 1)[0]
        if len(shape) == 2:
            s |= {f"{key}.lora_down.weight": (rank, shape[1]), f"{key}.lora_up.weight": (shape[0], rank),
                  f"{key}.alpha": ()}
        elif name.endswith(".bias"):
            s[f"{key}.diff_b"] = shape
        else:
            s[f"{key}.diff"] = shape
    return s


def _causal_conv(name: str, out_c: int, in_c: int, k: tuple[int, int, int] = (3, 3, 3)) -> Shapes:
    return {f"{name}.weight": (out_c, in_c, *k), f"{name}.bias": (out_c,)}


def _residual(name: str, in_c: int, out_c: int) -> Shapes:
    s = {f"{name}.residual.0.gamma": (in_c, 1, 1, 1), f"{name}.residual.3.gamma": (out_c, 1, 1, 1)}
    s |= _causal_conv(f"{name}.residual.2", out_c, in_c) | _causal_conv(f"{name}.residual.6", out_c, out_c)
    if in_c != out_c:
        s |= _causal_conv(f"{name}.shortcut", out_c, in_c, (1, 1, 1))
    return s


def _attention(name: str, c: int) -> Shapes:
    return {f"{name}.norm.gamma": (c, 1, 1), f"{name}.to_qkv.weight": (c * 3, c, 1, 1),
            f"{name}.to_qkv.bias": (c * 3,), f"{name}.proj.weight": (c, c, 1, 1), f"{name}.proj.bias": (c,)}


def _resample(name: str, c: int, mode: str) -> Shapes:
    out_c = c // 2 if mode.startswith("up") else c
    s = {f"{name}.resample.1.weight": (out_c, c, 3, 3), f"{name}.resample.1.bias": (out_c,)}
    if mode == "upsample3d":
        s |= _causal_conv(f"{name}.time_conv", c * 2, c, (3, 1, 1))
    elif mode == "downsample3d":
        s |= _causal_conv(f"{name}.time_conv", c, c, (3, 1, 1))
    return s


def _middle_and_head(prefix: str, mid_c: int, head_c: int, head_out: int) -> Shapes:
    s = _residual(f"{prefix}.middle.0", mid_c, mid_c) | _attention(f"{prefix}.middle.1", mid_c)
    s |= _residual(f"{prefix}.middle.2", mid_c, mid_c)
    s[f"{prefix}.head.0.gamma"] = (head_c, 1, 1, 1)
    return s | _causal_conv(f"{prefix}.head.2", head_out, head_c)


def vae21_shapes(dim: int = 96, z_dim: int = 16) -> Shapes:
    """comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16) in full (ComfyUI fixes its config for a 2.1 VAE):
    encoder, the two 1x1 convs, decoder. 126.9 M parameters."""
    mult = (1, 2, 4, 4)
    enc = [dim * m for m in (1, *mult)]  # 96 96 192 384 384
    s = _causal_conv("encoder.conv1", enc[0], 3)
    n, downs = 0, ("downsample2d", "downsample3d", "downsample3d")
    for i, (c_in, c_out) in enumerate(zip(enc[:-1], enc[1:])):
        for _ in range(2):
            s |= _residual(f"encoder.downsamples.{n}", c_in, c_out)
            n, c_in = n + 1, c_out
        if i < len(downs):
            s |= _resample(f"encoder.downsamples.{n}", c_out, downs[i])
            n += 1
    s |= _middle_and_head("encoder", enc[-1], enc[-1], z_dim * 2)
    s |= _causal_conv("conv1", z_dim * 2, z_dim * 2, (1, 1, 1)) | _causal_conv("conv2", z_dim, z_dim, (1, 1, 1))
    dec = [dim * m for m in (mult[-1], *mult[::-1])]  # 384 384 384 192 96
    s |= _causal_conv("decoder.conv1", dec[0], z_dim)
    n, ups = 0, ("upsample3d", "upsample3d", "upsample2d")
    for i, (c_in, c_out) in enumerate(zip(dec[:-1], dec[1:])):
        c_in = c_in // 2 if i > 0 else c_in  # an upsample halves the channels before the next stage
        for _ in range(3):
            s |= _residual(f"decoder.upsamples.{n}", c_in, c_out)
            n, c_in = n + 1, c_out
        if i < len(ups):
            s |= _resample(f"decoder.upsamples.{n}", c_out, ups[i])
            n += 1
    return s | _middle_and_head("decoder", dec[0], dec[-1], 3)


def vae22_shapes(dim: int = 160, dec_dim: int = 256, z_dim: int = 48) -> Shapes:
    """comfy.ldm.wan.vae2_2.WanVAE as sd.py builds it for a Wan 2.2 VAE (dim 160, z_dim 48, the
    decoder at its default dec_dim 256): 12 input/output channels (2x2 pixel patches), residual
    stages whose shortcuts (AvgDown3D/DupUp3D) hold no weights, resamples that keep the channels.
    ComfyUI recognises it by `decoder.upsamples.0.upsamples.0.residual.2.weight`."""
    mult = (1, 2, 4, 4)
    enc = [dim * m for m in (1, *mult)]  # 160 160 320 640 640
    s = _causal_conv("encoder.conv1", enc[0], 12)
    t_down = (False, True, True)
    for i, (c_in, c_out) in enumerate(zip(enc[:-1], enc[1:])):
        for j in range(2):
            s |= _residual(f"encoder.downsamples.{i}.downsamples.{j}", c_in, c_out)
            c_in = c_out
        if i < len(mult) - 1:
            name = f"encoder.downsamples.{i}.downsamples.2"
            s |= {f"{name}.resample.1.weight": (c_out, c_out, 3, 3), f"{name}.resample.1.bias": (c_out,)}
            if t_down[i]:
                s |= _causal_conv(f"{name}.time_conv", c_out, c_out, (3, 1, 1))
    s |= _middle_and_head("encoder", enc[-1], enc[-1], z_dim * 2)
    s |= _causal_conv("conv1", z_dim * 2, z_dim * 2, (1, 1, 1)) | _causal_conv("conv2", z_dim, z_dim, (1, 1, 1))
    dec = [dec_dim * m for m in (mult[-1], *mult[::-1])]  # 1024 1024 1024 512 256
    s |= _causal_conv("decoder.conv1", dec[0], z_dim)
    t_up = t_down[::-1]
    for i, (c_in, c_out) in enumerate(zip(dec[:-1], dec[1:])):
        for j in range(3):
            s |= _residual(f"decoder.upsamples.{i}.upsamples.{j}", c_in, c_out)
            c_in = c_out
        if i < len(mult) - 1:
            name = f"decoder.upsamples.{i}.upsamples.3"
            s |= {f"{name}.resample.1.weight": (c_out, c_out, 3, 3), f"{name}.resample.1.bias": (c_out,)}
            if t_up[i]:
                s |= _causal_conv(f"{name}.time_conv", c_out * 2, c_out, (3, 1, 1))
    s |= _middle_and_head("decoder", dec[0], dec[-1], 12)
    return s


def umt5_small_shapes() -> Shapes:
    """Every small tensor of UMT5-XXL's encoder: layer norms and each block's relative attention
    bias. ComfyUI builds the whole 5.7 B model regardless; what is not stored stays untouched
    (zero) memory, but a small tensor left out would be uninitialised and turn the output to NaN."""
    s: Shapes = {"encoder.final_layer_norm.weight": (T5_DIM,)}
    for i in range(T5_LAYERS):
        b = f"encoder.block.{i}.layer"
        s |= {f"{b}.0.layer_norm.weight": (T5_DIM,), f"{b}.1.layer_norm.weight": (T5_DIM,),
              f"{b}.0.SelfAttention.relative_attention_bias.weight": (T5_BUCKETS, T5_HEADS)}
    return s


# ------------------------------------------------------------------ values

def _is_norm(name: str) -> bool:
    return name.endswith((".gamma", "norm_q.weight", "norm_k.weight", "norm3.weight", "layer_norm.weight",
                          "norm_k_img.weight", "q_norm.weight", "k_norm.weight", "layer_norm1.weight",
                          "layer_norm2.weight", "pre_layrnorm.weight", "post_layernorm.weight",
                          "img_emb.proj.0.weight", "img_emb.proj.4.weight"))


def _is_zero(name: str) -> bool:
    """Tensors a stand-in keeps at zero: biases, T5's attention biases, and wav2vec2's unused mask
    embedding and positional conv scale (g = 0 makes weight_norm's conv add nothing)."""
    return name.endswith((".bias", "relative_attention_bias.weight", "masked_spec_embed",
                          "parametrizations.weight.original0"))


def _values(shapes: Shapes, seed: int, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Random weights scaled by 1/sqrt(fan_in) (activations keep their scale through the layers),
    biases 0, norm weights 1: a network that passes a signal through, deterministic from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(shapes):
        shape = shapes[name]
        if _is_norm(name):
            t = torch.ones(shape)
        elif _is_zero(name):
            t = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else max(1, math.prod(shape))
            t = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        yield name, t.to(dtype)


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path


def _save_sparse(path: Path, tensors: dict[str, torch.Tensor], zeros: Shapes, zero_dtype: str = "F8_E4M3") -> Path:
    """A safetensors file whose `zeros` tensors (stored last, `zero_dtype`) are never written: the
    file ends in a hole the file system reads back as zero bytes (0 in float8 and float16), so a
    300 MB file costs the disk a few MB and the writer no time."""
    sizes = {"F8_E4M3": 1, "F16": 2}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()  # little-endian, as safetensors stores it
        header[name] = {"dtype": {torch.float16: "F16", torch.float32: "F32"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    for name, shape in zeros.items():
        n = math.prod(shape) * sizes[zero_dtype]
        header[name] = {"dtype": zero_dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw_header = json.dumps(header, separators=(",", ":")).encode()
    raw_header += b" " * (-len(raw_header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw_header)) + raw_header)
        for blob in blobs:
            fh.write(blob)
        fh.truncate(8 + len(raw_header) + offset)
    tmp.replace(path)
    return path


def write_s2v(path: Path, seed: int) -> Path:
    """The S2V model at tiny DiT size with its fixed-size audio modules, all stored (~7 MB fp16)."""
    return _save(path, dict(_values(s2v_shapes(), seed, torch.float16)))


def write_animate(path: Path, seed: int) -> Path:
    """The Animate model at tiny DiT size with its fixed-size face and motion encoders (~78 MB fp16),
    and the motion encoder's Blur kernels (buffers the real file holds too: StyleGAN2's [1, 3, 3, 1]
    outer product, normalised)."""
    return _save(path, {**dict(_values(animate_shapes(), seed, torch.float16)), **animate_kernels()})


def animate_kernels() -> dict[str, torch.Tensor]:
    """The motion encoder's Blur buffers (in its downsampling convs and skips)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = (taps[None, :] * taps[:, None] / (taps.sum() ** 2)).to(torch.float16)
    return {f"motion_encoder.enc.net_app.convs.{n}.{conv}.0.kernel": kernel.clone()
            for n in range(1, 8) for conv in ("conv2", "skip")}


def write_clip_vision_h(path: Path, seed: int) -> Path:
    """CLIP vision H, every tensor stored (a missing one would be torch.empty garbage): the layers'
    matrices as a sparse zero tail (~632 MB on paper, a few MB on disk), the rest random."""
    small, big = clip_vision_h_shapes()
    return _save_sparse(path, dict(_values(small, seed, torch.float16)), big)


def write_audio_encoder(path: Path, seed: int) -> Path:
    """wav2vec2 large as ComfyUI loads it (strict=False, fixed config). Every tensor is stored: one
    left out is torch.empty memory, which can hold garbage (seen: NaN features, a black video). The
    transformer's matrices are zeros (each layer adds nothing: the hidden states are the projected
    features), written as a sparse tail; the conv front end and the projection are random, so the
    features follow the sound."""
    small, big = wav2vec2_shapes()
    return _save_sparse(path, dict(_values(small, seed, torch.float16)), big)


def write_expert(path: Path, seed: int, in_dim: int = I2V_IN_DIM, out_dim: int = OUT_DIM) -> Path:
    """A Wan2.2 14B-class expert at tiny size (~2.2 MB fp16); ComfyUI detects Wan 2.1-family t2v
    with this in_dim, the class the real experts get (in_dim 36: I2V, 16: T2V). With in_dim and
    out_dim 48 it is the TI2V 5B model's layout (WAN22_T2V)."""
    return _save(path, dict(_values(dit_shapes(in_dim, out_dim), seed, torch.float16)))


def write_lora(path: Path, seed: int, rank: int = LORA_RANK, scale: float = 1.0) -> Path:
    """A LoRA of the tiny DiT's layout (~64 KB). `scale` multiplies the up weights, so 0 gives a
    LoRA whose every key loads but changes nothing."""
    tensors = {}
    for name, t in _values(lora_shapes(rank), seed, torch.float16):
        if name.endswith(".alpha"):
            t = torch.tensor(float(rank), dtype=torch.float16)
        elif name.endswith((".lora_up.weight", ".diff", ".diff_b")):
            t = (torch.randn(t.shape, generator=torch.Generator().manual_seed(seed + len(name)))
                 * 0.5 * scale).to(torch.float16)
        tensors[name] = t
    return _save(path, tensors)


def write_foreign_lora(path: Path, seed: int = 0) -> Path:
    """A LoRA made for another model family (SD1.5 UNet keys): ComfyUI would load none of it."""
    gen = torch.Generator().manual_seed(seed)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    return _save(path, {f"{key}.lora_down.weight": torch.randn(4, 320, generator=gen).half(),
                        f"{key}.lora_up.weight": torch.randn(320, 4, generator=gen).half(),
                        f"{key}.alpha": torch.tensor(4.0).half()})


def tokenizer_model() -> bytes:
    """A tiny SentencePiece model with T5's special ids (pad 0, eos 1, unk 2), trained in memory."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_TEXT * 20), model_writer=out, vocab_size=64,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        minloglevel=2, hard_vocab_limit=False)
    return out.getvalue()


def write_text_encoder(path: Path, seed: int) -> Path:
    """UMT5-XXL as ComfyUI recognises it: the last block's wi_1 at full shape (zeros, fp8: 42 MB),
    the small tensors, and the SentencePiece tokenizer as a `spiece_model` uint8 tensor."""
    tensors = dict(_values(umt5_small_shapes(), seed, torch.float16))
    tensors["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = torch.zeros(
        (T5_FF, T5_DIM), dtype=torch.float8_e4m3fn)
    tensors["spiece_model"] = torch.frombuffer(bytearray(tokenizer_model()), dtype=torch.uint8)
    return _save(path, tensors)


def write_vae(path: Path, seed: int) -> Path:
    """The full Wan 2.1 VAE with random weights, stored fp16 (~254 MB)."""
    return _save(path, dict(_values(vae21_shapes(), seed, torch.float16)))


def write_vae22(path: Path, seed: int) -> Path:
    """The full Wan 2.2 VAE (its config is fixed in sd.py, ~700 M parameters) with random weights,
    stored float8_e4m3fn (~0.7 GB; ComfyUI upcasts on load) so writing and reading it stay quick."""
    return _save(path, {name: (t if _is_norm(name) or t.ndim < 2 else t.to(torch.float8_e4m3fn))
                        for name, t in _values(vae22_shapes(), seed, torch.float32)})


# ------------------------------------------------------------------ a whole volume

def _manifest() -> list[tuple[str, str]]:
    """(folder, name) of every file the worker's manifest lists: one source of the real names."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from wan_worker.models import MANIFEST

    return [(m.folder, m.name) for m in MANIFEST]


def write_file(models_dir: Path, folder: str, name: str, seed: int) -> Path:
    """One manifest file, built by what its folder holds; each name gets a seed of its own."""
    path = models_dir / folder / name
    own_seed = seed * 1000 + sum(name.encode()) % 997
    if folder == "diffusion_models" and "_s2v_" in name:
        return write_s2v(path, own_seed)
    if folder == "audio_encoders":
        return write_audio_encoder(path, own_seed)
    if folder == "clip_vision":
        return write_clip_vision_h(path, own_seed)
    if folder == "diffusion_models" and "Animate" in name:
        return write_animate(path, own_seed)
    if folder == "diffusion_models" and "_ti2v_5B" in name:
        return write_expert(path, own_seed, in_dim=TI2V_DIM, out_dim=TI2V_DIM)
    if folder == "diffusion_models":
        return write_expert(path, own_seed, in_dim=T2V_IN_DIM if "_t2v_" in name else I2V_IN_DIM)
    if folder == "loras":
        return write_lora(path, own_seed)
    if folder == "text_encoders":
        return write_text_encoder(path, own_seed)
    if folder == "vae" and name.startswith("wan2.2_vae"):
        return write_vae22(path, own_seed)
    if folder == "vae":
        return write_vae(path, own_seed)
    if folder == "detection":
        return write_onnx_placeholder(path)
    if folder == "frame_interpolation":
        return write_rife(path, own_seed)
    if folder == "upscale_models":
        return write_esrgan(path, own_seed)
    raise ValueError(f"no tiny stand-in for {folder}/{name}")


# RIFE 4.9 (rife49.pth as ComfyUI users have it): block widths and ResConv counts shrunk, the
# names and the layout as in the real file (4 blocks, the 4.7+ `encode` head, 6-channel lastconv)
RIFE_WIDTHS, RIFE_RESCONVS, RIFE_FEATURES = (16, 12, 8, 8), 2, 4


def rife_state_dict(seed: int, lastconv_gain: float = 0.01, widths: tuple[int, ...] = RIFE_WIDTHS,
                    resconvs: int = RIFE_RESCONVS, head: int = 16) -> dict[str, torch.Tensor]:
    """A tiny IFNet. Its last convolutions are scaled down (`lastconv_gain`), so the flow it finds is
    small and its blend mask near 0.5: an in-between frame lies close to the average of its two.
    `widths=(192, 128, 96, 64), resconvs=8` is the real rife49.pth's size (bench --postprocess)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, out_c: int, in_c: int, k: int = 3, gain: float = 1.0, transposed: bool = False) -> None:
        shape = (in_c, out_c, k, k) if transposed else (out_c, in_c, k, k)
        sd[f"{name}.weight"] = torch.randn(shape, generator=gen) * gain / math.sqrt(in_c * k * k)
        sd[f"{name}.bias"] = torch.zeros(out_c)

    conv("encode.0", head, 3)
    conv("encode.1", RIFE_FEATURES, head, k=4, transposed=True)
    for n, width in enumerate(widths):
        cin = 7 + 2 * RIFE_FEATURES if n == 0 else 12 + 2 * RIFE_FEATURES
        conv(f"block{n}.conv0.0.0", width // 2, cin)
        conv(f"block{n}.conv0.1.0", width, width // 2)
        for r in range(resconvs):
            conv(f"block{n}.convblock.{r}.conv", width, width)
            sd[f"block{n}.convblock.{r}.beta"] = torch.ones(1, width, 1, 1)
        conv(f"block{n}.lastconv.0", 24, width, k=4, gain=lastconv_gain, transposed=True)
    return sd


def write_rife(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rife_state_dict(seed), path)
    return path


# Real-ESRGAN x2plus (RRDBNet, new-style keys, 2x by a pixel unshuffle before 4x of upsampling):
# one RRDB block and 8 features instead of 23 and 64; spandrel fixes the growth channels at 32.
ESRGAN_FEATURES, ESRGAN_GROWTH = 8, 32


def esrgan_state_dict(seed: int, features: int = ESRGAN_FEATURES, blocks: int = 1) -> dict[str, torch.Tensor]:
    """`features=64, blocks=23` is RealESRGAN_x2plus.pth's size (bench --postprocess)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, out_c: int, in_c: int) -> None:
        sd[f"{name}.weight"] = torch.randn((out_c, in_c, 3, 3), generator=gen) / math.sqrt(in_c * 9)
        sd[f"{name}.bias"] = torch.zeros(out_c)

    nf, gc = features, ESRGAN_GROWTH
    conv("conv_first", nf, 3 * 4)
    for b in range(blocks):
        for r in (1, 2, 3):
            for k in range(1, 5):
                conv(f"body.{b}.rdb{r}.conv{k}", gc, nf + (k - 1) * gc)
            conv(f"body.{b}.rdb{r}.conv5", nf, nf + 4 * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf)
    return sd


def write_esrgan(path: Path, seed: int) -> Path:
    """As Real-ESRGAN saves its weights: the state dict under `params_ema`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": esrgan_state_dict(seed)}, path)
    return path


def write_onnx_placeholder(path: Path) -> Path:
    """The Animate preprocessing's ONNX files (the worker loads them, not ComfyUI): bytes that pass
    the volume check (a ModelProto's first field). ComfyUI's interpreter has no `onnx` package, so
    a test that runs the preprocessing writes real tiny models over them with tests/tinyonnx.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x08\x08" + b"\0" * 64)
    return path


def write_volume(models_dir: Path, seed: int = 0) -> list[Path]:
    """Every file of the manifest under `models_dir/<folder>/<name>`."""
    return [write_file(models_dir, folder, name, seed) for folder, name in _manifest()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tinywan", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="models folder to fill (diffusion_models/, loras/, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_volume(args.dir, args.seed):
        print(f"{path.stat().st_size:>12,d}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
