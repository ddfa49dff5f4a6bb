"""In-process A/B of the builder's fast paths: cnnspec's built model against the plain torch.nn one.

Both models hold the same weights; "plain" puts each relu back before its max pooling (into the
Keras-style Conv2D it came from, where it came from one) and uses torch.nn.Flatten, as a
hand-built model would. Blocks of 10 training steps (channels-last, fused
Adam, batch 100, random data) alternate between the two in one process, so the host's drift
hits both alike; the median of the blocks is reported. Then Adam's step alone, torch's default
(for-each-parameter) implementation against the fused kernel, on the spec's parameters.

Run: python bench/step_ab.py [SPEC] [--blocks N]   (default: specs/mnist_cnn.yaml, 15 blocks)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cnnspec
from cnnspec.build.modules import Flatten
from cnnspec.train.host import cpu_model, keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]


def plain(model: nn.Sequential) -> nn.Sequential:
    """The same modules in torch.nn's order: each relu before its pooling, plain Flatten."""
    mods: list[nn.Module] = []
    for m in model:
        if isinstance(m, nn.Identity):
            continue  # where a relu stood before the builder moved it after the pooling
        if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[1], nn.ReLU):
            before = mods[-1] if mods else None
            if isinstance(before, nn.Sequential) and isinstance(before[-1], nn.Identity):
                before[-1] = m[1]  # a Keras Conv2D(activation=relu) gets its relu back
                mods.append(m[0])
            else:
                mods += [m[1], m[0]]
        elif isinstance(m, Flatten):
            mods.append(nn.Flatten(m.start_dim, m.end_dim))
        else:
            mods.append(m)
    return nn.Sequential(*mods)


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "mnist_cnn.yaml"))
    ap.add_argument("--blocks", type=int, default=15)
    args = ap.parse_args()
    keep_freed_memory()  # as `cnnspec run` does
    spec = cnnspec.load_spec(args.spec)
    torch.manual_seed(0)
    built = cnnspec.build_model(spec)
    models = {"plain torch.nn": plain(copy.deepcopy(built)), "cnnspec": built}
    x_all = torch.rand(6000, *spec.input_shape)
    y_all = torch.randint(0, int(spec.trace.output_shape[0]), (6000,))
    steps = {}
    for name, m in models.items():
        m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(m.parameters(), 1e-3, fused=True)

        def step(m: nn.Module = m, opt: torch.optim.Optimizer = opt) -> None:
            idx = torch.randint(0, 6000, (100,))
            x = x_all.index_select(0, idx).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(m(x), y_all.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        timed(step, 3)  # warm-up
        steps[name] = step
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.blocks):
        for name, step in steps.items():
            times[name].append(timed(step, 10))
    base = statistics.median(times["plain torch.nn"])
    print(f"{spec.name}: one training step, batch 100, median of {args.blocks} blocks of 10")
    for name, t in times.items():
        print(f"  {name:15s} {statistics.median(t):7.2f} ms  ({statistics.median(t) / base:.3f}x)")

    params = [nn.Parameter(p.detach().clone()) for p in built.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opts = {"default": torch.optim.Adam(params, 1e-3), "fused": torch.optim.Adam(params, 1e-3, fused=True)}
    adam: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(args.blocks):
        for name, o in opts.items():
            adam[name].append(timed(o.step, 10))
    print(f"Adam's step on its {sum(p.numel() for p in params):,} parameters:")
    for name, t in adam.items():
        print(f"  {name:15s} {statistics.median(t):7.3f} ms")
    print(f"machine: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
