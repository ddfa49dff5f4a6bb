"""Pydantic models of the spec file's sections, and the resolved Spec that later steps take."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cnnspec.errors import KeyPath, Problem
from cnnspec.registry.params import Int, PosFloat, PosInt
from cnnspec.registry.types import Params, Registry, Shape
from cnnspec.spec.loadplan import FineTune, WeightsCheck
from cnnspec.spec.shapes import ShapeTrace
from cnnspec.spec.yamlpos import Located

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EVAL_BATCH = 1000  # the evaluation batch where inputs are small (MNIST, CIFAR)
EVAL_INPUT_BYTES = 32 * 2**20  # the most float32 input an automatic evaluation batch holds

# A component reference: a bare name, or {type: NAME, ...params}. Resolved against the registry.
Ref = Annotated[Any, Field(description="a registered name, or {type: NAME, ...parameters}")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NormalizeSection(Section):
    """``data.normalize: {mean, std}``: fixed per-channel statistics, e.g. those a pretrained model saw."""

    mean: list[float] = Field(min_length=1, description="per-channel mean, e.g. ImageNet's [0.485, 0.456, 0.406]")
    std: list[Annotated[float, Field(gt=0.0)]] = Field(
        min_length=1, description="per-channel standard deviation, e.g. ImageNet's [0.229, 0.224, 0.225]")


class DataSection(Section):
    """``data:``: which dataset, where its files are, and how batches are made."""

    dataset: Ref = Field(description="dataset name, or {type: NAME, ...options}")
    root: str | None = Field(
        None, description="folder holding the dataset's files; default ~/.cache/cnnspec/data"
    )
    download: bool = Field(True, description="download missing files (needs a network)")
    batch_size: PosInt = Field(64, description="training batch size (per process)")
    eval_batch_size: PosInt | None = Field(
        None, description="batch size for evaluation; default 1000, or fewer where 1000 inputs would take more "
        "than 32 MiB as float32 (never fewer than batch_size)")
    val_split: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of the training split held out for validation"
    )
    normalize: bool | NormalizeSection = Field(
        False, description="true: standardise each channel with the training split's mean and std; or "
        "{mean: [...], std: [...]} per channel (the statistics pretrained weights expect)"
    )
    augment: list[Ref] = Field(
        default=[],
        description="augmentations of the training batches, in order: NAME or {type: NAME, ...parameters}",
    )
    limit: PosInt | None = Field(
        None, description="use only the first N samples of each split (a quick trial on a subset)")


class WarmupSection(Section):
    """``train.warmup``: a linear rise of the learning rate at the start of training."""

    epochs: PosInt | None = Field(None, description="warm up over this many epochs")
    steps: PosInt | None = Field(None, description="or over this many optimizer steps")
    start_factor: float = Field(0.1, gt=0.0, le=1.0, description="the first step's fraction of the rate")

    @model_validator(mode="after")
    def _one_length(self) -> WarmupSection:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' and 'steps'")
        return self


class GradClipSection(Section):
    """``train.grad_clip``: clip the gradients before each optimizer step."""

    norm: PosFloat | None = Field(None, description="clip the total 2-norm of all gradients to this")
    value: PosFloat | None = Field(None, description="or clip every gradient element to [-value, value]")

    @model_validator(mode="after")
    def _one_kind(self) -> GradClipSection:
        if (self.norm is None) == (self.value is None):
            raise ValueError("give exactly one of 'norm' and 'value'")
        return self


class EmaSection(Section):
    """``train.ema``: evaluate and save an exponential moving average of the weights."""

    decay: float = Field(0.999, gt=0.0, lt=1.0, description="weight of the old average at each step")


# Which layers a fine-tuning setting applies to: a top-level index (negative counts from the end),
# a range "a:b" of top-level indices, or a module path with * wildcards ("4", "4.*", "4.main.0").
Selector = Annotated[Int | str, Field(description="a layer index (-1: the last), a range 'a:b', or a module "
                                                  "path such as '4' or '4.main.*'")]


class TrainSection(Section):
    """``train:``: the loop's settings."""

    epochs: PosInt = Field(10, description="passes over the training split")
    seed: Annotated[int, Field(ge=0)] | None = Field(0, description="seed for weights and shuffling")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    optimizer: Ref = Field("adam", description="optimizer name, or {type: NAME, ...parameters}")
    scheduler: Ref = Field(None, description="lr scheduler, or {type: NAME, ...parameters}")
    loss: Ref = Field("cross_entropy", description="loss name, or {type: NAME, ...parameters}")
    channels_last: bool | None = Field(
        None, description="channels-last memory layout; default: on for CPU and CUDA"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or bf16 / fp16 mixed precision (autocast; fp16 on CUDA only)"
    )
    capture: Literal["auto", "off", "cuda_graph"] = Field(
        "auto", description="the training step captured once as a CUDA graph and replayed: auto (where it is "
                            "safe, on CUDA only), off, or cuda_graph (insist: an error where it cannot be)"
    )
    callbacks: list[Ref] = Field(
        default=[], description="callbacks, in order: NAME or {type: NAME, ...parameters}"
    )
    warmup: WarmupSection | None = Field(None, description="linear learning-rate warm-up, composed with the scheduler")
    grad_clip: GradClipSection | None = Field(None, description="gradient clipping by norm or by value")
    ema: EmaSection | None = Field(None, description="exponential moving average of the weights")
    freeze: list[Selector] = Field(
        default=[], description="layers whose parameters do not train (their BatchNorm statistics stay fixed too)")
    lr_multipliers: dict[str, PosFloat] = Field(
        default={}, description="learning-rate multipliers by layer: {SELECTOR: FACTOR}, e.g. {'-1': 10}")
    limit_batches: PosInt | None = Field(
        None, description="a quick trial: at most N batches per epoch: training takes the first N of each epoch's "
        "shuffled batches, validation and test their first N of data.eval_batch_size (--limit-batches N)")

    @field_validator("capture", mode="before")
    @classmethod
    def _capture(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare off as false

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(DEVICE_PATTERN, v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


def _amount(bytes_: bool) -> Any:
    def check(v: Any) -> int:
        from cnnspec.spec.cost import parse_amount

        n = parse_amount(v, bytes_)
        if n < 1:
            raise ValueError("must be at least 1")
        return n

    return check


class LimitsSection(Section):
    """``limits:``: budgets the model must stay within; going over one is a located error."""

    params: int | str | None = Field(None, description="most trainable parameters, e.g. 5M or 25000000")
    macs: int | str | None = Field(
        None, description="most multiply-accumulates per sample's forward pass, e.g. 500M or 1.5G")
    memory: int | str | None = Field(
        None, description="most estimated training memory at data.batch_size, e.g. 2GiB or 500MB")

    @field_validator("params", "macs", mode="before")  # before: true is not read as 1
    @classmethod
    def _count(cls, v: Any) -> Any:
        return None if v is None else _amount(False)(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        return None if v is None else _amount(True)(v)


class WeightsSection(Section):
    """``weights:``: start from a weights file, checked against the spec by ``validate``."""

    file: str = Field(description="a .pth/.pt (torch.save) or .safetensors file, relative to the spec")
    mapping: Literal["cnnspec", "torchvision", "timm", "position"] = Field(
        "cnnspec", description="how the file's tensors meet the model's: cnnspec (by name: a cnnspec run's "
        "checkpoint or state dict); torchvision, timm, position (in order, shapes checked; torchvision and timm "
        "files may lack BatchNorm's num_batches_tracked)")
    key: str | None = Field(
        None, description="where the state dict is inside the file (e.g. 'state_dict', 'model'); default: the "
        "top level, or 'model' / 'state_dict' when the top level holds one")
    strip: str | None = Field(None, description="a prefix to strip from the file's tensor names, e.g. 'module.'")
    skip: list[Selector] = Field(
        default=[], description="layers initialised fresh instead (a new head): their tensors in the file are unused")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="the file's SHA-256, if it must be exactly this file")


class SpecFile(Section):
    """The whole file as written."""

    name: str | None = Field(None, pattern=NAME_PATTERN, description="names the run folder")
    input: Annotated[list[PosInt], Field(min_length=1, max_length=3)] = Field(
        description="one sample's shape: [channels, height, width] (or [features])"
    )
    layers: Annotated[list[Any], Field(min_length=1)] = Field(
        description="the layers in order: a bare NAME, or {type: NAME, ...parameters}"
    )
    data: DataSection | None = Field(None, description="the dataset and batching")
    train: TrainSection = Field(default_factory=TrainSection, description="the training loop")
    plugins: list[str] = Field(
        default=[],
        description="plugins to load for this spec: module names, or .py files relative to it",
    )
    blocks: dict[str, Any] | None = Field(
        None, description="named, parameterised blocks of layers, used as {block: NAME, ...arguments}"
    )
    sweep: dict[str, Any] | None = Field(
        None, exclude=True,
        description="a hyperparameter search for `cnnspec sweep` (checked by spec.sweepspace; `run` ignores it)",
    )
    limits: LimitsSection | None = Field(
        None, description="budgets: params, macs (per sample) and memory (training estimate)")
    weights: WeightsSection | None = Field(None, description="initial weights from a file (pretrained models)")


@dataclass(frozen=True)
class Component:
    """A registered type as the spec uses it: the type object and its validated params.

    A composite layer also has ``children``: one tuple of components per child list (in the
    order of its type's ``paths``). ``trail`` lists the block uses it was expanded from,
    outermost first, as (block name, path of the use), for "in block ... used at line N".
    """

    name: str
    type: Any
    params: Params
    path: KeyPath
    children: tuple[tuple[Component, ...], ...] = ()
    trail: tuple[tuple[str, KeyPath], ...] = ()
    frozen: bool = False  # written with ``trainable: false``: its parameters do not train

    def to_dict(self) -> dict[str, Any]:
        """Plain data that checks back to the same component (defaults filled in)."""
        out = self._plain()
        return {**out, "trainable": False} if self.frozen else out

    def _plain(self) -> dict[str, Any]:
        own = getattr(self.type, "item_dict", None)
        if own is not None:  # a block use: {block: NAME, ...arguments}
            return own(self.params)
        out = {"type": self.name, **self.params.model_dump(mode="json")}
        if self.children:
            for where, kids in zip(self.type.paths(self.params), self.children):
                cur: Any = out
                for part in where[:-1]:
                    cur = cur[part]
                cur[where[-1]] = [k.to_dict() for k in kids]
        return out


@dataclass(frozen=True)
class Spec:
    """A checked spec: every name resolved, every parameter validated, every shape known."""

    file: str
    source: SpecFile
    layers: list[Component]
    trace: ShapeTrace
    optimizer: Component
    scheduler: Component | None
    loss: Component
    dataset: Component | None
    registry: Registry = field(repr=False)
    located: Located = field(repr=False, compare=False)  # positions and --set notes, for later errors
    augmentations: list[Component] = field(default_factory=list)
    callbacks: list[Component] = field(default_factory=list)
    weights: WeightsCheck | None = field(default=None, repr=False, compare=False)  # what run loads
    finetune: FineTune = field(default_factory=FineTune, repr=False, compare=False)  # frozen layers, lr factors

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A problem located in the spec's file, as validate would report it."""
        return self.located.problem(path, message)

    @property
    def name(self) -> str:
        if self.source.name:
            return self.source.name
        return Path(self.file).stem or "spec"

    @property
    def input_shape(self) -> Shape:
        return tuple(self.source.input)

    @property
    def data(self) -> DataSection | None:
        return self.source.data

    @property
    def eval_batch_size(self) -> int:
        """``data.eval_batch_size``, or by default 1000 samples where their float32 inputs take at most
        EVAL_INPUT_BYTES, else as many as do but at least ``data.batch_size``: evaluating 1000 pictures
        of 256 x 256 at once would hold 786 MB of input, more than the training step it follows."""
        data = self.data
        if data is None:
            return EVAL_BATCH
        if data.eval_batch_size is not None:
            return data.eval_batch_size
        per_sample = 4 * math.prod(self.input_shape)
        return min(EVAL_BATCH, max(data.batch_size, EVAL_INPUT_BYTES // per_sample))

    @property
    def train(self) -> TrainSection:
        return self.source.train

    def to_dict(self) -> dict[str, Any]:
        """The spec with every default filled in, as plain data (for run folders)."""
        out = self.source.model_dump(mode="json")
        out["name"] = self.name
        out["layers"] = [c.to_dict() for c in self.layers]
        out["train"]["optimizer"] = self.optimizer.to_dict()
        out["train"]["loss"] = self.loss.to_dict()
        out["train"]["scheduler"] = self.scheduler.to_dict() if self.scheduler else None
        out["train"]["callbacks"] = [c.to_dict() for c in self.callbacks]
        if out.get("data") is not None and self.dataset is not None:
            out["data"]["eval_batch_size"] = self.eval_batch_size
            out["data"]["dataset"] = self.dataset.to_dict()
            out["data"]["augment"] = [c.to_dict() for c in self.augmentations]
        if out.get("weights"):  # the file it started from, absolute and pinned to the bytes checked
            out["weights"]["file"] = str((Path(self.file).parent / Path(out["weights"]["file"]).expanduser()).resolve())
            if self.weights is not None:
                out["weights"]["sha256"] = self.weights.sha256
        return out

    def resolved(self, cli_plugins: Sequence[str] = ()) -> dict[str, Any]:
        """The spec a run folder records: defaults filled in, overrides applied, paths absolute,
        ``-p`` plugins listed, so that ``--resume`` works from anywhere."""
        from cnnspec.registry.trust import is_plugin_file

        out = self.to_dict()
        if out.get("data") and out["data"].get("root"):
            out["data"]["root"] = str(Path(out["data"]["root"]).expanduser().resolve())

        def absolute(ref: str, base: Path) -> str:
            return str((base / ref).resolve()) if is_plugin_file(ref) else ref

        plugins = [absolute(p, Path(self.file).parent) for p in out.get("plugins", [])]
        plugins += [absolute(p, Path.cwd()) for p in cli_plugins if absolute(p, Path.cwd()) not in plugins]
        out["plugins"] = plugins
        return out
