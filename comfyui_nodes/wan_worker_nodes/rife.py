"""RIFE 4.x frame interpolation: the IFNet network in plain torch, built from its weights' shapes.

The public RIFE 4.x weights (rife46.pth ... rife49.pth, Practical-RIFE's flownet.pkl) are state dicts
of four `IFBlock`s (`block0`..`block3`, coarse to fine) and, from 4.7 on, a small `encode` head
whose features the blocks see beside the frames. Nothing here is tied to one version's channel
counts: each block's widths are read from its tensors, so the tiny stand-ins of the tests load the
same way as the real files. Weights are read with `torch.load(weights_only=True)` (or safetensors):
a checkpoint that needs to run code to load is refused, never executed.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALES = (8, 4, 2, 1)  # each block's working resolution, as a divisor of the frame's: coarse to fine
# The coarsest block works at 1/8 of the frame and its first convolutions halve it twice more, so
# frames are padded to a multiple of 32 (and cropped back) for every level's size to line up.
PAD_MULTIPLE = 32
LEAK = 0.2


class ResConv(nn.Module):
    """A residual 3x3 convolution with a learnt per-channel gain (`beta`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, LEAK)


def _down(cin: int, cout: int) -> nn.Sequential:
    """A stride-2 convolution and its activation (keys `<n>.0.weight`, as the weights name them)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(LEAK))


class IFBlock(nn.Module):
    """One level: from the frames (warped by the flow so far) it estimates a flow update and a blend mask."""

    def __init__(self, cin: int, width: int, resconvs: int, out: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_down(cin, width // 2), _down(width // 2, width))
        self.convblock = nn.Sequential(*(ResConv(width) for _ in range(resconvs)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, out * 4, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor, flow: Tensor | None, scale: int) -> tuple[Tensor, Tensor]:
        x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        y = self.lastconv(self.convblock(self.conv0(x)))
        y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        return y[:, :4] * scale, y[:, 4:5]


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: each output pixel samples `image` at its position plus `flow` (pixels, x then y)."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    dx = flow[:, 0] * (2.0 / max(w - 1, 1))
    dy = flow[:, 1] * (2.0 / max(h - 1, 1))
    grid = torch.stack((gx.expand(n, h, w) + dx, gy.expand(n, h, w) + dy), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """The RIFE 4.x network. `encode` (4.7+) is None for 4.6-style weights, whose masks add up level
    by level; with it each level's mask replaces the last, as those versions were trained."""

    def __init__(self, blocks: list[IFBlock], encode: nn.Sequential | None) -> None:
        super().__init__()
        for n, block in enumerate(blocks):
            self.add_module(f"block{n}", block)
        self.levels = len(blocks)
        self.encode = encode

    def forward(self, img0: Tensor, img1: Tensor, timestep: Tensor) -> Tensor:
        """The frame at `timestep` (N,1,1,1 in 0..1) between img0 and img1 (N,3,H,W, H and W multiples
        of PAD_MULTIPLE)."""
        t = timestep.expand(-1, 1, img0.shape[2], img0.shape[3])
        f0 = f1 = None
        if self.encode is not None:
            f0, f1 = self.encode(img0), self.encode(img1)
        flow: Tensor | None = None
        mask: Tensor | None = None
        for level in range(self.levels):
            block = getattr(self, f"block{level}")
            if flow is None or mask is None:
                x = torch.cat([img0, img1, *((f0, f1) if f0 is not None else ()), t], 1)
                flow, mask = block(x, None, SCALES[level])
                continue
            seen = [warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])]
            if f0 is not None and f1 is not None:
                seen += [warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])]
            d_flow, d_mask = block(torch.cat([*seen, t, mask], 1), flow, SCALES[level])
            flow = flow + d_flow
            mask = d_mask if self.encode is not None else mask + d_mask
        assert flow is not None and mask is not None
        blend = torch.sigmoid(mask)
        return warp(img0, flow[:, :2]) * blend + warp(img1, flow[:, 2:4]) * (1 - blend)


def read_weights(path: str) -> dict[str, Tensor]:
    """The state dict of a .safetensors file or a torch checkpoint, loaded without running its code;
    a `module.` prefix (weights saved from DataParallel, as Practical-RIFE's are) is dropped."""
    if path.endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unpickler refusal, a truncated zip, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{os.path.basename(path)} cannot be read as weights only ({first}); "
                             "use a RIFE 4.x state dict (.pth or .safetensors)") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{os.path.basename(path)} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def build_ifnet(sd: Mapping[str, Tensor], name: str = "the weights") -> IFNet:
    """An IFNet shaped like `sd` and holding it (strict: every tensor used, none missing)."""
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"block(\d+)\.", k))})
    if levels != list(range(len(SCALES))):
        raise ValueError(f"{name} are not RIFE 4.x IFNet weights: expected blocks block0..block{len(SCALES) - 1}, "
                         f"found {['block%d' % n for n in levels] or 'none'}")
    blocks = []
    for n in levels:
        p = f"block{n}."
        try:
            first, second = sd[p + "conv0.0.0.weight"], sd[p + "conv0.1.0.weight"]
            last = sd[p + "lastconv.0.weight"]
        except KeyError as exc:
            raise ValueError(f"{name} are not RIFE 4.x IFNet weights: {exc.args[0]} is missing") from None
        resconvs = len({k.split(".")[2] for k in sd if k.startswith(p + "convblock.")})
        blocks.append(IFBlock(first.shape[1], second.shape[0], resconvs, last.shape[1] // 4))
    encode = None
    if "encode.0.weight" in sd:
        conv, up = sd["encode.0.weight"], sd["encode.1.weight"]
        encode = nn.Sequential(nn.Conv2d(3, conv.shape[0], 3, 2, 1),
                               nn.ConvTranspose2d(up.shape[0], up.shape[1], 4, 2, 1))
    net = IFNet(blocks, encode)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{name} do not fit a RIFE 4.x IFNet: {str(exc).splitlines()[0]}") from None
    return net.eval()


def load_ifnet(path: str) -> IFNet:
    return build_ifnet(read_weights(path), os.path.basename(path))


def _pad(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % PAD_MULTIPLE, 0, -h % PAD_MULTIPLE), mode="replicate")


@torch.inference_mode()
def interpolate(net: IFNet, frames: Tensor, factor: int, device: torch.device | str = "cpu",
                step: Callable[[], None] | None = None) -> Tensor:
    """`frames` (N,H,W,C in 0..1, ComfyUI's IMAGE) with factor-1 frames made between each pair:
    (N-1)*factor+1 frames, the originals kept at every factor-th place. One pair at a time on
    `device` (its in-betweens as one batch); the result stays on the frames' device."""
    if factor < 1:
        raise ValueError(f"factor must be 1 or more, not {factor}")
    n, h, w, c = frames.shape
    if factor == 1 or n < 2:
        return frames
    out = torch.empty(((n - 1) * factor + 1, h, w, c), dtype=frames.dtype, device=frames.device)
    out[::factor] = frames
    k = factor - 1
    t = torch.arange(1, factor, device=device, dtype=torch.float32).view(k, 1, 1, 1) / factor
    nxt = _pad(frames[0:1, ..., :3].movedim(-1, 1).to(device, torch.float32))
    for i in range(n - 1):
        cur, nxt = nxt, _pad(frames[i + 1:i + 2, ..., :3].movedim(-1, 1).to(device, torch.float32))
        mid = net(cur.expand(k, -1, -1, -1), nxt.expand(k, -1, -1, -1), t)[:, :, :h, :w].clamp(0, 1)
        mid = mid.movedim(1, -1).to(frames.device, frames.dtype)
        if c > 3:  # an alpha channel: blended linearly
            a = frames[i:i + 1, ..., 3:]
            b = frames[i + 1:i + 2, ..., 3:]
            mid = torch.cat((mid, a + (b - a) * t.view(k, 1, 1, 1).to(frames.device, frames.dtype)), -1)
        out[i * factor + 1:(i + 1) * factor] = mid
        if step is not None:
            step()
    return out
