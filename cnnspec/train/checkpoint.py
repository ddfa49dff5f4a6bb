"""The checkpoint: the one dict that ``last.pt`` and ``best.pt`` hold, its keys written and read here only.

Every checkpoint holds the weights that eval, predict and export load, what is needed to feed
them (the resolved spec, the class names, the input scaling, what the training pictures looked
like: ``pixels``, absent from runs made before it was recorded) and the run's history (metrics,
best epoch, seed). ``last.pt`` adds the training state (``Resume``): optimizer, scheduler,
gradient scaler, callbacks, random-number streams and the position within the epoch, so that
``--resume`` continues exactly. Files are read with ``weights_only=True``: one that would need
arbitrary unpickling is refused, and nothing in it runs.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnspec.build import optim
from cnnspec.data.pixels import PixelStats
from cnnspec.errors import CheckpointError
from cnnspec.registry.types import Callback
from cnnspec.train.rundir import LAST, atomic_write

CHECKPOINT_FORMAT = "cnnspec-checkpoint-1"  # the value of every checkpoint's "format" key

# what a resumable checkpoint must hold, and of which type (the position's fields in resumable_problem)
_RESUMABLE = {"model": dict, "optimizer": dict, "spec": dict, "position": dict, "metrics": list,
              "rng": dict, "seed": int}


@dataclass
class Position:
    """Where training stands: the epoch and step to run next, the epoch's shuffling state at
    its start, and the running sums of an epoch interrupted part-way."""

    epoch: int
    step: int
    gen: Tensor
    sums: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "gen": self.gen, "sums": self.sums}


@dataclass
class Stateful:
    """The objects whose state ``last.pt`` holds, as the loop has them once the hooks have run."""

    model: nn.Module  # the weights being trained (with train.ema, not the average)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    callbacks: list[Callback]
    ema: torch.optim.swa_utils.AveragedModel | None = None


@dataclass
class Resume:
    """What ``last.pt`` adds to the weights so that training continues where it stopped."""

    position: Position
    optimizer: dict[str, Any]
    # {"torch": CPU generator state, "cuda": every CUDA generator's state or None, and under torchrun
    # "ranks": each rank's own {"torch", "cuda"} (rank_rng), so every rank continues its own stream}
    rng: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None  # None when the scaler is off (every precision but fp16)
    train_model: dict[str, Tensor] | None = None  # with train.ema: the trained weights ("model" is their average)
    ema_steps: int = 0

    @classmethod
    def capture(cls, position: Position, objects: Stateful, ranks: list[dict[str, Any]] | None = None) -> Resume:
        """The training state of ``objects`` now, at ``position`` (``ranks``: every rank's ``rank_rng``)."""
        ema = objects.ema
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        return cls(
            position=position,
            optimizer=optim.state_dict(objects.optimizer),
            rng={**rng, "ranks": ranks} if ranks else rng,
            callbacks=[cb.state_dict() for cb in objects.callbacks],
            scheduler=objects.scheduler.state_dict() if objects.scheduler is not None else None,
            scaler=objects.scaler.state_dict() if objects.scaler.is_enabled() else None,
            train_model=cpu_weights(objects.model) if ema is not None else None,
            ema_steps=int(ema.n_averaged) if ema is not None else 0,
        )

    def restore(self, objects: Stateful, averaged: dict[str, Tensor], rank: int = 0, size: int = 1) -> bool:
        """Put this state into ``objects`` (``averaged``: the checkpoint's model weights, which
        are the moving average under train.ema); CheckpointError if it does not fit them.

        True when rank ``rank`` of ``size`` got its own random-number streams back (the
        checkpoint was saved by as many processes); else it has rank 0's."""
        try:
            objects.model.load_state_dict(self.train_model or averaged)
            if objects.ema is not None:
                objects.ema.module.load_state_dict(averaged)
                objects.ema.n_averaged.fill_(int(self.ema_steps))
            for cb, cb_state in zip(objects.callbacks, self.callbacks):
                cb.load_state_dict(cb_state)
            optim.load_state_dict(objects.optimizer, self.optimizer)
            if objects.scheduler is not None and self.scheduler is not None:
                objects.scheduler.load_state_dict(self.scheduler)
            if self.scaler:
                objects.scaler.load_state_dict(self.scaler)
            torch.set_rng_state(self.rng["torch"])
            if torch.cuda.is_available() and self.rng.get("cuda") is not None:
                torch.cuda.set_rng_state_all(self.rng["cuda"])
            ranks = self.rng.get("ranks")
            if not ranks or len(ranks) != size:
                return False
            torch.set_rng_state(ranks[rank]["torch"])
            if torch.cuda.is_available() and ranks[rank].get("cuda") is not None:
                torch.cuda.set_rng_state(ranks[rank]["cuda"], torch.cuda.current_device())
            return True
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{LAST} does not fit this run: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0][:300]}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.train_model is not None:
            out["train_model"] = self.train_model
            out["ema_steps"] = self.ema_steps
        out.update({"callbacks": self.callbacks, "optimizer": self.optimizer, "scaler": self.scaler,
                    "scheduler": self.scheduler, "rng": self.rng, "position": self.position.to_dict()})
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Resume:
        """From a checkpoint that ``resumable_problem`` passed."""
        return cls(Position(**state["position"]), state["optimizer"], state["rng"],
                   callbacks=state.get("callbacks") or [], scheduler=state.get("scheduler"),
                   scaler=state.get("scaler"), train_model=state.get("train_model") or None,
                   ema_steps=state.get("ema_steps", 0))


@dataclass
class Checkpoint:
    """One checkpoint file's contents. ``model``: the weights eval, predict and export load (the
    moving average with train.ema); ``resume``: the training state, in ``last.pt`` only."""

    model: dict[str, Tensor]
    spec: dict[str, Any]  # the resolved spec, as the run folder's spec.yaml
    classes: list[str]
    mean: list[float] | None  # the per-channel standardisation training applied, if any
    std: list[float] | None
    metrics: list[dict[str, Any]]  # one row per finished epoch
    best: dict[str, Any] | None  # {"epoch", "metric", "value"} of the best epoch so far
    seed: int
    resume: Resume | None = None
    pixels: PixelStats | None = None  # the training pictures' mean and background (None: an older run)

    def to_dict(self) -> dict[str, Any]:
        """The dict on disk (the format of every run folder so far: keep it)."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model,
            "spec": self.spec,
            "classes": self.classes,
            "normalization": {"mean": self.mean, "std": self.std},
            "metrics": self.metrics,
            "best": self.best,
            "seed": self.seed,
        }
        if self.pixels is not None:
            state["pixels"] = self.pixels.to_dict()
        if self.resume is not None:
            state.update(self.resume.to_dict())
        return state

    def save(self, path: Path) -> None:
        """Write atomically: a crash mid-save leaves the previous file."""
        state = self.to_dict()
        atomic_write(path, lambda f: torch.save(state, f), binary=True)

    @classmethod
    def load(cls, path: str | Path, map_location: Any = "cpu") -> Checkpoint:
        """The weights of a checkpoint and what comes with them (its training state is not read);
        a ``model`` entry that is not named tensors is left for ``weights_mismatch`` to name."""
        state = read_state(path, map_location)
        norm = state.get("normalization") or {}
        # as the file has them: a foreign file's entries are checked where they are used
        model: Any = state.get("model")
        spec: Any = state.get("spec")
        seed: Any = state.get("seed")
        return cls(model, spec, list(state.get("classes") or []), norm.get("mean"), norm.get("std"),
                   list(state.get("metrics") or []), state.get("best"), seed,
                   pixels=PixelStats.from_dict(state.get("pixels")))

    @classmethod
    def load_resumable(cls, run_dir: str | Path, map_location: Any = "cpu") -> Checkpoint:
        """``run_dir``'s last.pt, with everything the loop needs to continue (CheckpointError if not)."""
        state = read_state(Path(run_dir) / LAST, map_location)
        why = resumable_problem(state)
        if why:
            raise CheckpointError(f"{run_dir}: {LAST} is not a resumable checkpoint: {why}")
        norm = state.get("normalization") or {}
        return cls(state["model"], state["spec"], list(state.get("classes") or []), norm.get("mean"),
                   norm.get("std"), state["metrics"], state.get("best"), state["seed"], Resume.from_dict(state),
                   PixelStats.from_dict(state.get("pixels")))

    def weights_mismatch(self, model: nn.Module) -> str | None:
        """Why these weights do not fit ``model`` (missing, extra or reshaped tensors), or None."""
        weights: Any = self.model
        if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
            return "its 'model' entry is not a set of named tensors"
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in weights.items()}
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing:
            return f"it lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        if extra:
            return f"it has tensors this model does not ({', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''})"
        for k, shape in want.items():
            if have[k] != shape:
                return f"{k} is {list(have[k])} in the checkpoint but {list(shape)} in this model"
        return None


def rank_rng(device: torch.device) -> dict[str, Any]:
    """This process's random-number streams: the CPU one, and its GPU's when it trains on one."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def cpu_weights(module: nn.Module) -> dict[str, Tensor]:
    """A module's state as detached CPU tensors: what a checkpoint stores."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def read_state(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint file's dict, loaded with ``weights_only=True``; CheckpointError for a missing,
    unreadable or foreign file, or one that needs arbitrary unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = (re.search(r"GLOBAL\s+([\w.]+)", text)
                 or re.search(r"unsupported (?:global|class|function)\W*([\w.]+)", text, re.IGNORECASE))
        if found:
            raise CheckpointError(
                f"{path}: refused: not a plain weights file: it holds Python code or objects "
                f"({found.group(1)}), so it was not loaded and nothing in it ran") from None
        # torch's message is a paragraph of advice; the line that says what is wrong is short
        detail = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(
            ("Weights only load failed", "Please file", "Check the documentation"))]
        raise CheckpointError(f"{path}: not a readable checkpoint ({(detail or ['unreadable'])[0][:200]})") from None
    except Exception as e:  # truncated zip, wrong file type, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cnnspec checkpoint")
    return state


def resumable_problem(state: dict[str, Any]) -> str | None:
    """Why ``state`` cannot be resumed from (a key missing or of the wrong type), or None."""
    for key, kind in _RESUMABLE.items():
        if not isinstance(state.get(key), kind):
            return f"'{key}' is missing or not {'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"
    pos = state["position"]
    if set(pos) != {"epoch", "step", "gen", "sums"} or not all(
            type(pos[k]) is int and pos[k] >= 0 for k in ("epoch", "step")):
        return "its 'position' is not an epoch, step, shuffling state and sums"
    if not isinstance(pos["gen"], Tensor) or not (pos["sums"] is None or isinstance(pos["sums"], dict)):
        return "its 'position' is not an epoch, step, shuffling state and sums"
    if not isinstance(state["rng"].get("torch"), Tensor):
        return "its random-number state is missing"
    ranks = state["rng"].get("ranks")
    if ranks is not None and not (isinstance(ranks, list) and all(
            isinstance(r, dict) and isinstance(r.get("torch"), Tensor) for r in ranks)):
        return "its random-number states of the processes are not tensors"
    if not all(isinstance(r, dict) for r in state["metrics"]):
        return "its 'metrics' are not rows of numbers"
    return None
