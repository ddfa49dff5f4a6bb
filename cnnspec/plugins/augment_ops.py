"""The batch-wise tensor work of the built-in augmentations, on the batch's own device.

Each op splits into ``sample(x)`` (the random parameters of every sample, drawn from torch's
global random state, which checkpoints save) and ``apply(x, y, params)`` (deterministic), so
tests can compare a batch with the per-sample definition. Shapes: x is N x C x H x W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]


class Op:
    """An augmentation: ``op(x, y)`` draws parameters and applies them."""

    def sample(self, x: Tensor) -> Params:
        raise NotImplementedError

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.apply(x, y, self.sample(x))


def _uniform(n: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) * (high - low) + low


class RandomCropOp(Op):
    def __init__(self, padding: int, fill: float) -> None:
        self.padding, self.fill = padding, fill

    def sample(self, x: Tensor) -> Params:
        n, span = len(x), 2 * self.padding + 1  # top-left corner in [0, 2p] on each axis
        return {"top": torch.randint(span, (n,), device=x.device), "left": torch.randint(span, (n,), device=x.device)}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        p = self.padding
        if p == 0:
            return x, y
        n, c, h, w = x.shape
        xp = F.pad(x, (p, p, p, p), value=self.fill)  # N x C x (H+2p) x (W+2p)
        rows = params["top"][:, None] + torch.arange(h, device=x.device)  # N x H: the rows each keeps
        cols = params["left"][:, None] + torch.arange(w, device=x.device)  # N x W
        out = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))  # N x C x H x (W+2p)
        return out.gather(3, cols[:, None, None, :].expand(n, c, h, w)), y


class RandomResizedCropOp(Op):
    """torchvision's RandomResizedCrop, batch-wise: each sample's crop box is drawn as
    ``RandomResizedCrop.get_params`` draws it (up to 10 tries of an area in ``scale`` and a log-uniform
    aspect ``ratio``, else the centre crop clamped to ``ratio``), then resized to ``size`` bilinearly.

    The resize is one ``grid_sample`` over the batch with the sampling points of
    ``F.interpolate(crop, size, mode="bilinear", align_corners=False)`` clamped to each crop box, so
    every sample equals torchvision's ``resized_crop`` of it (a crop is never larger than the output,
    and antialiasing changes only shrinking). Chosen by bench/resized_crop.py: for 64 x 3 x 64 x 64 on
    the 2-core CPU host (shared) 0.7-0.9 ms, a loop of crop + interpolate 3.4-3.8 ms, batched resize
    matrices 1.3-4.4 ms."""

    TRIES = 10

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float], size: tuple[int, int]) -> None:
        self.scale, self.ratio, self.size = scale, ratio, size

    def sample(self, x: Tensor) -> Params:
        n, dev = len(x), x.device
        h, w = x.shape[2:]
        area = (torch.rand(n, self.TRIES, device=dev) * (self.scale[1] - self.scale[0]) + self.scale[0]) * (h * w)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(torch.rand(n, self.TRIES, device=dev) * (log_hi - log_lo) + log_lo)
        cw, ch = torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()
        fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits, as torchvision takes
        found = fits.any(1)
        fh, fw = self._fallback(h, w)
        ch = torch.where(found, ch.gather(1, first)[:, 0], fh)
        cw = torch.where(found, cw.gather(1, first)[:, 0], fw)
        top = torch.where(found, (torch.rand(n, device=dev) * (h - ch + 1)).long(), (h - fh) // 2)
        left = torch.where(found, (torch.rand(n, device=dev) * (w - cw + 1)).long(), (w - fw) // 2)
        return {"top": top, "left": left, "h": ch, "w": cw}

    def _fallback(self, h: int, w: int) -> tuple[int, int]:
        """torchvision's crop when no try fits: the whole picture, cut to the nearest allowed ratio."""
        if w / h < self.ratio[0]:
            return int(round(w / self.ratio[0])), w
        if w / h > self.ratio[1]:
            return h, int(round(h * self.ratio[1]))
        return h, w

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        oh, ow = self.size
        ys = _source(params["top"], params["h"], oh, x.dtype)  # N x oh source rows, in pixels
        xs = _source(params["left"], params["w"], ow, x.dtype)  # N x ow source columns
        # grid_sample (align_corners=False) takes pixel p of a side of length L at (2p + 1) / L - 1
        gy, gx = (2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1
        grid = torch.stack([gx[:, None, :].expand(n, oh, ow), gy[:, :, None].expand(n, oh, ow)], dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), y


def _source(start: Tensor, length: Tensor, out: int, dtype: torch.dtype) -> Tensor:
    """Where each of ``out`` output pixels samples a box of ``length`` pixels from ``start`` (N each):
    bilinear interpolation's pixel centres, clamped to the box as interpolating the crop alone clamps."""
    centres = torch.arange(out, device=start.device, dtype=dtype)[None, :] + 0.5
    inside = (centres * (length[:, None].to(dtype) / out) - 0.5).clamp(min=0)
    return torch.minimum(start[:, None].to(dtype) + inside, (start + length - 1)[:, None].to(dtype))


class HorizontalFlipOp(Op):
    def __init__(self, p: float) -> None:
        self.p = p

    def sample(self, x: Tensor) -> Params:
        return {"flip": torch.rand(len(x), device=x.device) < self.p}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        return torch.where(params["flip"][:, None, None, None], x.flip(3), x), y


class RandomAffineOp(Op):
    def __init__(self, degrees: float, translate: tuple[float, float], scale: tuple[float, float]) -> None:
        self.degrees, self.translate, self.scale = degrees, translate, scale

    def sample(self, x: Tensor) -> Params:
        n, dev = len(x), x.device
        h, w = x.shape[2:]
        th, tw = self.translate
        return {"angle": _uniform(n, -self.degrees, self.degrees, dev),
                "dy": _uniform(n, -th * h, th * h, dev), "dx": _uniform(n, -tw * w, tw * w, dev),
                "scale": _uniform(n, self.scale[0], self.scale[1], dev)}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        a = params["angle"] * (math.pi / 180)
        s = params["scale"]
        cos, sin = torch.cos(a) / s, torch.sin(a) / s  # the inverse of rotate-then-zoom, in pixels
        # grid_sample maps each output point to an input point in coordinates normalised to [-1, 1]
        # (align_corners=False): pixel offsets from the centre scale by 2/W across and 2/H down.
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 1] = cos, sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = -sin * w / h, cos
        dx, dy = params["dx"] * 2 / w, params["dy"] * 2 / h  # the output moves by (dx, dy) pixels
        theta[:, 0, 2] = -(theta[:, 0, 0] * dx + theta[:, 0, 1] * dy)
        theta[:, 1, 2] = -(theta[:, 1, 0] * dx + theta[:, 1, 1] * dy)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False), y


class RandomErasingOp(Op):
    def __init__(self, p: float, scale: tuple[float, float], ratio: tuple[float, float], value: float) -> None:
        self.p, self.scale, self.ratio, self.value = p, scale, ratio, value

    def sample(self, x: Tensor) -> Params:
        n, dev = len(x), x.device
        h, w = x.shape[2:]
        area = _uniform(n, *self.scale, dev) * h * w
        ratio = torch.exp(_uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), dev))
        eh = torch.sqrt(area * ratio).round().clamp(1, h).long()  # rectangle height and width
        ew = torch.sqrt(area / ratio).round().clamp(1, w).long()
        top = (torch.rand(n, device=dev) * (h - eh + 1)).long()  # top in [0, H - eh]
        left = (torch.rand(n, device=dev) * (w - ew + 1)).long()
        return {"erase": torch.rand(n, device=dev) < self.p, "top": top, "left": left, "h": eh, "w": ew}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        h, w = x.shape[2:]
        rows = torch.arange(h, device=x.device)[None, :]
        cols = torch.arange(w, device=x.device)[None, :]
        top, left = params["top"][:, None], params["left"][:, None]
        in_rows = (rows >= top) & (rows < top + params["h"][:, None])  # N x H
        in_cols = (cols >= left) & (cols < left + params["w"][:, None])  # N x W
        mask = in_rows[:, :, None] & in_cols[:, None, :] & params["erase"][:, None, None]  # N x H x W
        return x.masked_fill(mask[:, None], self.value), y


def soft(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Class indices as one-hot probabilities (N x K); probabilities stay as they are."""
    return y if y.is_floating_point() else F.one_hot(y, num_classes).to(dtype)


def _beta(alpha: float) -> float:
    return float(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())


class MixupOp(Op):
    def __init__(self, alpha: float, num_classes: int) -> None:
        self.alpha, self.k = alpha, num_classes

    def sample(self, x: Tensor) -> Params:
        return {"lam": torch.tensor(_beta(self.alpha)), "perm": torch.randperm(len(x), device=x.device)}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        lam, perm = float(params["lam"]), params["perm"]
        t = soft(y, self.k, x.dtype)
        return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


class CutMixOp(Op):
    def __init__(self, alpha: float, num_classes: int) -> None:
        self.alpha, self.k = alpha, num_classes

    def sample(self, x: Tensor) -> Params:
        h, w = x.shape[2:]
        lam = _beta(self.alpha)
        ch, cw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))  # the pasted box
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        top, left = max(cy - ch // 2, 0), max(cx - cw // 2, 0)
        bottom, right = min(cy + (ch + 1) // 2, h), min(cx + (cw + 1) // 2, w)
        return {"box": torch.tensor([top, left, bottom, right]), "perm": torch.randperm(len(x), device=x.device)}

    def apply(self, x: Tensor, y: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        top, left, bottom, right = (int(v) for v in params["box"])
        perm = params["perm"]
        h, w = x.shape[2:]
        out = x.clone()
        out[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)  # the labels follow the kept area
        t = soft(y, self.k, x.dtype)
        return out, lam * t + (1 - lam) * t[perm]
