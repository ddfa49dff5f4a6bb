"""A plugin for bench/startup.py (``-p bench/first_step_probe.py``): writes the wall-clock time at which
the first training step ended to the file named by $CNNSPEC_FIRST_STEP_FILE.

The step's end is taken as the start of the second step's forward pass (a forward pre-hook on the
model, removed after it), so it counts everything the first step paid, its optimizer call included;
nothing is hooked on the optimizer, whose step hooks would change the path under measurement."""

from __future__ import annotations

import os
import time
from typing import Any

from cnnspec.plugin import hookimpl


@hookimpl
def before_training(context: Any) -> None:
    calls = [0]

    def pre(module: Any, args: Any) -> None:
        calls[0] += 1
        if calls[0] == 2 and module.training:
            with open(os.environ["CNNSPEC_FIRST_STEP_FILE"], "w") as f:
                f.write(repr(time.time()))
            handle.remove()

    handle = context.model.register_forward_pre_hook(pre)
