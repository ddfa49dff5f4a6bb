"""Epoch time and test accuracy of the Keras reference CNN on TensorFlow, to set beside cnnspec.

This is what a Keras user would otherwise run: the same model as specs/keras_mnist_cnn.yaml
(three SAME conv blocks of 32, 64, 128 filters with 2x2 SAME max-pooling, Dense 256 ReLU,
Dropout 0.4, Dense 10), Adam 0.001, batch 100, MNIST pixels scaled to [0, 1].

Run it with a Python that has TensorFlow (it is not a cnnspec dependency), e.g.:
  python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.21.0
  /tmp/tf/bin/python bench/keras_tensorflow.py --epochs 2
Pair it with:  cnnspec run specs/keras_mnist_cnn.yaml --set data.root=../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
