"""What you do with a finished run: evaluate it, predict images, export the model, plot curves."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnspec.data.decode import MAX_IMAGE_PIXELS  # one bound for every image reader
from cnnspec.errors import ToolError
from cnnspec.registry.manager import call_plugin
from cnnspec.train.trained import Trained, load_run

if TYPE_CHECKING:  # pragma: no cover
    from cnnspec.data.pixels import PixelStats
    from cnnspec.data.stream import StreamedImages


@dataclass
class Outcomes:
    """Every test sample's prediction, for the report: true and predicted class, the predicted
    class's probability, and the test images as the model saw them (standardised, on the device)."""

    y: torch.Tensor  # N, long, CPU
    pred: torch.Tensor  # N, long, CPU
    confidence: torch.Tensor  # N, float, CPU: softmax probability of the predicted class
    x: torch.Tensor | StreamedImages  # N x C x H x W, as fed to the model (sliced, never indexed by one int)
    mean: list[float] | None
    std: list[float] | None


def evaluate(trained: Trained, device: torch.device, batch: int | None = None) -> dict[str, Any]:
    """Test-split loss, accuracy, per-class accuracy and the confusion matrix (rows: true class);
    ``batch``: pictures per forward pass (default: the spec's evaluation batch)."""
    return evaluate_outcomes(trained, device, batch)[0]


def evaluate_outcomes(trained: Trained, device: torch.device, batch: int | None = None,
                      loss: bool = True) -> tuple[dict[str, Any], Outcomes]:
    """``evaluate``'s result, and each test sample's outcome (one pass over the test split).

    ``loss=False`` (the report): the loss plugin is neither built nor called, and "loss" is None."""
    from cnnspec.data.splits import prepare_data
    from cnnspec.train.runner import data_budget

    spec = trained.spec
    batch = batch or spec.eval_batch_size
    data = prepare_data(spec, device, data_budget(spec, device))
    model = trained.model.to(device)
    loss_fn = call_plugin(spec.registry, "loss", spec.loss.name, spec.loss.type.build, spec.loss.params) \
        if loss else None
    x, y = data.test
    k = len(data.classes)
    total = 0.0
    preds, confs = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            if loss_fn is not None:
                total += float(loss_fn(out, y[i:i + batch])) * len(out)
            conf, pred = torch.softmax(out.float(), dim=1).max(1)
            preds.append(pred.cpu())
            confs.append(conf.cpu())
    pred_all, y_cpu = torch.cat(preds), y.cpu()
    confusion = torch.bincount(y_cpu * k + pred_all, minlength=k * k).view(k, k)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    result = {
        "checkpoint": str(trained.checkpoint), "samples": len(x), "loss": total / len(x) if loss_fn else None,
        "accuracy": confusion.diag().sum().item() / len(x), "classes": data.classes,
        "per_class_accuracy": per_class, "confusion": confusion.tolist(),
    }
    return result, Outcomes(y_cpu, pred_all, torch.cat(confs), x, data.mean, data.std)




def load_image(path: str, shape: tuple[int, ...], notes: list[str] | None = None) -> torch.Tensor:
    """An image file as a 1 x C x H x W tensor in [0, 1], converted and resized to ``shape``;
    ``notes`` gets a line when the picture had to be resized.

    Pixels are scaled by the image's real range: 8-bit by 255, 16-bit by 65535, float images
    as they are when within [0, 1]. Transparent pixels are laid on white (as viewers show
    them). What cannot be converted faithfully is refused in one line."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ToolError(f"{path}: {img.width} x {img.height} pixels is more than "
                                    f"{MAX_IMAGE_PIXELS:,}; refused (a decompression bomb?)")
                img.load()
                if notes is not None and (img.width, img.height) != (w, h):
                    notes.append(f"{path}: {img.width} x {img.height} pixels resized to {w} x {h}, the "
                                 "model's input; a picture of that size predicts more reliably")
                data = _as_float(path, img, c, (w, h), np)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ToolError(f"{path}: refused: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ToolError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(data).permute(2, 0, 1).unsqueeze(0).clamp(0.0, 1.0)  # 1 x C x H x W


def _as_float(path: str, img: Any, channels: int, size: tuple[int, int], np: Any) -> Any:
    """Pixels as float32 H x W x channels in [0, 1] at ``size`` (w, h), by mode and bit depth."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    mode = img.mode
    if mode in ("P", "PA") or (mode in ("L", "RGB") and "transparency" in img.info):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
        mode = "RGB"
    if mode in ("1", "L", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):  # 8 bits: resized as 8 bits
        small = img.convert("L" if channels == 1 else "RGB").resize(size, bilinear)
        a = np.asarray(small, dtype=np.float32) / 255.0
        return np.ascontiguousarray(a.reshape(size[1], size[0], channels))
    if mode.startswith("I"):  # 16- or 32-bit integer greys
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        if a.min(initial=0) < 0:
            raise ToolError(f"{path}: a {mode} image with negative values; convert it to 8 or 16 bits first")
        a = (a / top).astype(np.float32)
    elif mode == "F":
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ToolError(f"{path}: a float image holding NaN or infinite values; refused")
        if a.min(initial=0) < 0 or a.max(initial=0) > 1:
            raise ToolError(f"{path}: a float image with values from {a.min():g} to {a.max():g}; "
                            "predict reads float images in [0, 1] only: rescale it first")
    else:
        raise ToolError(f"{path}: image mode {mode} is not supported; save it as 8-bit PNG")
    small = np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize(size, bilinear))
    return np.ascontiguousarray(np.repeat(small[:, :, None], channels, axis=2), dtype=np.float32)


def predict(trained: Trained, images: Sequence[str], top: int, invert: bool = False) -> list[dict[str, Any]]:
    """The ``top`` classes with probabilities for each image file (``invert``: 1 - pixel first)."""
    shape = trained.spec.input_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ToolError(f"predict needs a 1- or 3-channel image input, the spec's input is {shape}")
    out = []
    with torch.inference_mode():
        for path in images:
            notes: list[str] = []
            x = load_image(path, shape, notes)
            x = 1.0 - x if invert else x
            note = polarity_note(path, x, trained.pixels, invert)
            notes += [note] if note else []
            x = trained.preprocess(x)
            probs = torch.softmax(trained.model(x), dim=1)[0]
            p, idx = probs.topk(min(top, len(probs)))
            names = trained.classes or [str(i) for i in range(len(probs))]
            out.append({"image": path, "top": [{"class": names[i], "index": i, "probability": q}
                                               for q, i in zip(p.tolist(), idx.tolist())], "warnings": notes})
    return out


DARK, LIGHT = 1 / 3, 2 / 3  # a background below DARK is dark, above LIGHT light; between: no opinion


def polarity_note(path: str, x: torch.Tensor, pixels: PixelStats | None, inverted: bool) -> str | None:
    """A warning when the picture ``x`` (1 x C x H x W in [0, 1], as the model will see it) has a
    dark background where the training pictures have light ones, or the reverse; None when they
    agree, when either is neither dark nor light, or when the run did not record ``pixels``."""
    from cnnspec.data.pixels import border_mean

    if pixels is None:
        return None
    mine, theirs = float(border_mean(x).mean()), sum(pixels.border) / len(pixels.border)

    def tone(v: float) -> str | None:
        return "dark" if v < DARK else "light" if v > LIGHT else None

    if tone(mine) is None or tone(theirs) is None or tone(mine) == tone(theirs):
        return None
    what = (f"{tone(mine)} background (border mean {mine:.2f}) but the training pictures have "
            f"{tone(theirs)} ones ({theirs:.2f})")
    if inverted:
        return f"{path}: with --invert, a {what}; this picture matches them without --invert"
    return f"{path}: a {what}; --invert flips the picture (1 - pixel) to match them"


def export(trained: Trained, fmt: str, output: str | None) -> Path:
    """Write a TorchScript or ONNX model that takes [0, 1] images (any batch size).

    ``output`` may be a file or an existing folder (the file goes inside it, default name)."""
    from cnnspec.train.rundir import atomic_write

    default = "model.torchscript.pt" if fmt == "torchscript" else "model.onnx"
    if output and Path(output).is_dir():
        output = str(Path(output) / default)
    if output and not Path(output).resolve().parent.is_dir():
        raise ToolError(f"{output}: its folder does not exist")
    module = trained.with_preprocessing().eval()
    example = torch.rand(2, *trained.spec.input_shape)
    path = Path(output or trained.checkpoint.parent / default)
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.trace and save are deprecated, still supported
            scripted = torch.jit.trace(module, example)
            atomic_write(path, lambda f: torch.jit.save(scripted, f), binary=True)
        return path
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ToolError("ONNX export needs the onnx package: pip install 'cnnspec[onnx]'") from None

    def write_onnx(f: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter warns it is legacy
            torch.onnx.export(module, (example,), f, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

    atomic_write(path, write_onnx, binary=True)
    return path


def plot(run_dirs: Sequence[str], output: str) -> Path:
    """Compare the curves of several runs in one PNG; a sweep folder stands for its trials' runs."""
    import sys

    from cnnspec.train.curves import plot_runs

    runs, empty = [], []
    for d in run_dirs:
        found = [(f"{Path(d).name}/{t.name}", read_metrics_rows(t)) for t in sweep_trials(Path(d))] or [
            (Path(d).name, read_metrics_rows(Path(d)))]
        runs += [(label, rows) for label, rows in found if rows]
        if not any(rows for _, rows in found):  # a run stopped in its first epoch: `plot runs/*` draws the others
            empty.append(d)
    if not runs:
        raise ToolError(f"{', '.join(empty)}: no metrics.jsonl with epochs in it")
    for d in empty:
        print(f"cnnspec: warning: {d}: no metrics.jsonl with epochs in it; left out", file=sys.stderr)
    return plot_runs(runs, output)


def sweep_trials(folder: Path) -> list[Path]:
    """The trials' run folders of a sweep folder (one with sweep.json), by trial number; else []."""
    from cnnspec.sweep.folder import SWEEP_FILE

    if not (folder / SWEEP_FILE).is_file():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


MAX_METRICS_BYTES = 100_000_000


def read_metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch rows of RUN_DIR/metrics.jsonl; a line that is not one is skipped with a
    warning naming the file and line."""
    import json
    import sys

    from cnnspec.spec.metrics import ALWAYS, VAL
    from cnnspec.train.rundir import METRICS_FILE
    from cnnspec.util.files import NotRegularFile, read_regular

    path = run_dir / METRICS_FILE
    try:
        raw = read_regular(path, MAX_METRICS_BYTES)
    except FileNotFoundError:
        return []
    except NotRegularFile:
        raise ToolError(f"{path}: not a regular file") from None
    except OSError as e:
        raise ToolError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) > MAX_METRICS_BYTES:
        raise ToolError(f"{path}: larger than {MAX_METRICS_BYTES} bytes; not a metrics file")
    rows: list[dict[str, Any]] = []
    wanted: tuple[str, ...] = ALWAYS
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            why = "not JSON"
        else:
            if rows == [] and isinstance(row, dict) and VAL[0] in row:
                wanted = (*ALWAYS, *VAL)
            bad = [k for k in wanted if not (isinstance(row, dict) and _number(row.get(k)))]
            if isinstance(row, dict) and type(row.get("epoch")) is int and not bad:
                rows.append(row)
                continue
            why = f"missing or not a number: {', '.join(bad) or 'epoch'}"
        print(f"cnnspec: warning: {path}:{n}: not a metrics row ({why}); skipped", file=sys.stderr)
    return rows


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


__all__ = ["ToolError", "evaluate", "export", "load_run", "plot", "predict"]
