"""What you do with a finished run: evaluate it, predict images, export the model, plot curves."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ToolError
from .plugins import call_plugin
from .trained import Trained, load_run


def evaluate(trained: Trained, device: torch.device, batch: int = 1000) -> dict[str, Any]:
    """Test-split loss, accuracy, per-class accuracy and the confusion matrix (rows: true class)."""
    from .data import prepare_data

    spec = trained.spec
    data = prepare_data(spec, device)
    model = trained.model.to(device)
    loss_fn = call_plugin(spec.registry, "loss", spec.loss.name, spec.loss.type.build, spec.loss.params)
    x, y = data.test
    k = len(data.classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            total += float(loss_fn(out, y[i:i + batch])) * len(out)
            pairs = y[i:i + batch].cpu() * k + out.argmax(1).cpu()
            confusion += torch.bincount(pairs, minlength=k * k).view(k, k)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {
        "checkpoint": str(trained.checkpoint), "samples": len(x), "loss": total / len(x),
        "accuracy": confusion.diag().sum().item() / len(x), "classes": data.classes,
        "per_class_accuracy": per_class, "confusion": confusion.tolist(),
    }


def load_image(path: str, shape: tuple[int, ...]) -> torch.Tensor:
    """An image file as a 1 x C x H x W tensor in [0, 1], converted and resized to ``shape``."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ToolError(f"{path}: not a readable image ({e})") from None
    return data.view(h, w, c).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def predict(trained: Trained, images: Sequence[str], top: int, invert: bool = False) -> list[dict[str, Any]]:
    """The ``top`` classes with probabilities for each image file (``invert``: 1 - pixel first)."""
    shape = trained.spec.input_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ToolError(f"predict needs a 1- or 3-channel image input, the spec's input is {shape}")
    out = []
    with torch.inference_mode():
        for path in images:
            x = load_image(path, shape)
            x = trained.preprocess(1.0 - x if invert else x)
            probs = torch.softmax(trained.model(x), dim=1)[0]
            p, idx = probs.topk(min(top, len(probs)))
            names = trained.classes or [str(i) for i in range(len(probs))]
            out.append({"image": path, "top": [{"class": names[i], "index": i, "probability": q}
                                               for q, i in zip(p.tolist(), idx.tolist())]})
    return out


def export(trained: Trained, fmt: str, output: str | None) -> Path:
    """Write a TorchScript or ONNX model that takes [0, 1] images (any batch size)."""
    if output and not Path(output).resolve().parent.is_dir():
        raise ToolError(f"{output}: its folder does not exist")
    module = trained.with_preprocessing().eval()
    example = torch.rand(2, *trained.spec.input_shape)
    run_dir = trained.checkpoint.parent
    if fmt == "torchscript":
        path = Path(output or run_dir / "model.torchscript.pt")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.trace is deprecated, still supported
            scripted = torch.jit.trace(module, example)
        scripted.save(str(path))
        return path
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ToolError("ONNX export needs the onnx package: pip install 'cnnspec[onnx]'") from None
    path = Path(output or run_dir / "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns it is legacy
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def plot(run_dirs: Sequence[str], output: str) -> Path:
    """Compare the curves of several runs in one PNG."""
    from .plot import plot_runs
    from .rundir import RunDir

    runs = []
    for d in run_dirs:
        rows = RunDir(d).read_metrics()
        if not rows:
            raise ToolError(f"{d}: no metrics.jsonl with epochs in it")
        runs.append((Path(d).name, rows))
    return plot_runs(runs, output)


__all__ = ["ToolError", "evaluate", "export", "load_run", "plot", "predict"]
