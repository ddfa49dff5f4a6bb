"""Epoch time and test accuracy of the Keras reference CNN on TensorFlow, to set beside cnnspec.

This is what a Keras user would otherwise run: the same model as specs/keras_mnist_cnn.yaml
(three SAME conv blocks of 32, 64, 128 filters with 2x2 SAME max-pooling, Dense 256 ReLU,
Dropout 0.4, Dense 10), Adam 0.001, batch 100, MNIST pixels scaled to [0, 1].

Run it with a Python that has TensorFlow (it is not a cnnspec dependency), e.g.:
  python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.21.0
  /tmp/tf/bin/python bench/keras_tensorflow.py --epochs 2
With --pairs P it also runs cnnspec on specs/keras_mnist_cnn.yaml (with --cnnspec-python, the
Python that has cnnspec; default python3) as P back-to-back pairs of fresh processes, the side
that goes first alternating, and prints each pair's epoch-time ratio cnnspec/TensorFlow, their
median (target <= 1.0) and both test accuracies:
  /tmp/tf/bin/python bench/keras_tensorflow.py --pairs 3 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "MNIST" / "raw"


def read_idx(path: Path) -> np.ndarray:
    """An uncompressed IDX file as a numpy array (images N x 28 x 28 or labels N)."""
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the *-ubyte files")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--pairs", type=int, default=0, help="back-to-back pairs with cnnspec; 0: TensorFlow only")
    ap.add_argument("--cnnspec-python", default="python3", help="the Python with cnnspec installed")
    args = ap.parse_args()
    if args.pairs:
        return pairs(args)

    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(777)
    x = read_idx(args.data / "train-images-idx3-ubyte")[..., None].astype("float32") / 255
    y = read_idx(args.data / "train-labels-idx1-ubyte").astype("int64")
    tx = read_idx(args.data / "t10k-images-idx3-ubyte")[..., None].astype("float32") / 255
    ty = read_idx(args.data / "t10k-labels-idx1-ubyte").astype("int64")

    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPool2D(padding="same"),
        L.Conv2D(64, 3, activation="relu", padding="same"), L.MaxPool2D(padding="same"),
        L.Conv2D(128, 3, activation="relu", padding="same"), L.MaxPool2D(padding="same"),
        L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.4), L.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.001),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    seconds: list[float] = []
    model.fit(x, y, batch_size=100, epochs=args.epochs, callbacks=[Timer()], verbose=2)
    _, acc = model.evaluate(tx, ty, batch_size=1000, verbose=0)
    result = {"tensorflow": tf.__version__, "keras": keras.__version__, "params": model.count_params(),
              "epoch_seconds": seconds, "test_accuracy": float(acc)}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def tensorflow_side(args: argparse.Namespace) -> dict:
    """This script in a fresh process (TensorFlow only): its result line."""
    with tempfile.TemporaryDirectory() as out:
        res = Path(out) / "tf.json"
        proc = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--data", str(args.data),
                               "--json", str(res)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"TensorFlow side failed:\n{proc.stderr[-3000:]}")
        return json.loads(res.read_text())


def cnnspec_side(args: argparse.Namespace) -> dict:
    """`cnnspec run specs/keras_mnist_cnn.yaml` in a fresh process: epoch seconds and test accuracy."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.cnnspec_python, "-m", "cnnspec", "run", "specs/keras_mnist_cnn.yaml", "--quiet",
               "--set", f"train.epochs={args.epochs}", "--set", f"data.root={args.data.parents[1]}",
               "--set", "data.download=false", "--output", str(Path(out) / "run")]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            sys.exit(f"cnnspec side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((Path(out) / "run" / "summary.json").read_text())
        return {"epoch_seconds": [r["seconds"] for r in rows], "test_accuracy": rows[-1]["test_accuracy"],
                "device_name": summary.get("device_name"), "fast_paths": summary.get("fast_paths")}


def pairs(args: argparse.Namespace) -> None:
    """``args.pairs`` back-to-back pairs, alternating which side goes first; the median ratio."""
    rows = []
    for i in range(args.pairs):
        sides = [("tensorflow", tensorflow_side), ("cnnspec", cnnspec_side)]
        got = {name: fn(args) for name, fn in (sides if i % 2 == 0 else sides[::-1])}
        tf_s, cs_s = (statistics.mean(got[k]["epoch_seconds"]) for k in ("tensorflow", "cnnspec"))
        rows.append({**got, "ratio": cs_s / tf_s})
        print(f"pair {i + 1}: cnnspec {cs_s:.2f} s/epoch (acc {got['cnnspec']['test_accuracy']:.4f})  "
              f"TensorFlow {tf_s:.2f} s/epoch (acc {got['tensorflow']['test_accuracy']:.4f})  "
              f"ratio {cs_s / tf_s:.3f}", flush=True)
    median = statistics.median(r["ratio"] for r in rows)
    print(f"median epoch-time ratio cnnspec/TensorFlow over {args.pairs} pairs, {args.epochs} epoch(s) each: "
          f"{median:.3f} (target <= 1.0); machine: {rows[0]['cnnspec']['device_name']}")
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "pairs": rows, "median_ratio": median},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
