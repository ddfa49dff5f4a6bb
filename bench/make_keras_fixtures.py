"""Write the small Keras models that tests/test_keras_import.py imports, with their predictions.

Needs Keras on TensorFlow (not a cnnspec dependency); the test suite itself needs neither:
  python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1 h5py
  /tmp/tfenv/bin/python bench/make_keras_fixtures.py            # writes tests/fixtures/keras/

Every weight is set to seeded random values (BatchNormalization's moving variance positive), and
each Normalization adapted to random inputs, so a wrong transpose or a mixed-up tensor shows in
the outputs. Each NAME.npz holds `x` (a fixed channels-last input), `y` (Keras' predictions in
inference mode), `params` (model.count_params()) and `trainable` (the trainable ones). Each
.keras file is re-zipped with its members deflated (Keras stores them uncompressed, and its HDF5
weights are mostly padding), its members Keras' own bytes, and read back by Keras to check.
"""

from __future__ import annotations

import argparse
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow 2.21's oneDNN graph rewrite computes residual()'s LeakyReLU(negative_slope=0.1) after an
# Add with slope 0.2 (measured: the model alone differs from itself up to that layer by 4.3; with
# the rewrite off both agree with the layer's definition), so the reference outputs are TensorFlow's
# plain kernels.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras"


def seq_cnn() -> keras.Model:
    """specs/keras_mnist_cnn.yaml's model with fewer filters: three SAME conv blocks, Dense, Dropout."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(4, 3, activation="relu", padding="same", name="conv1"),
        layers.MaxPool2D(padding="same", name="pool1"),
        layers.Conv2D(8, 3, activation="relu", padding="same", name="conv2"),
        layers.MaxPool2D(padding="same", name="pool2"),
        layers.Conv2D(8, 3, activation="relu", padding="same", name="conv3"),
        layers.MaxPool2D(padding="same", name="pool3"),
        layers.Flatten(name="flatten"),
        layers.Dense(16, activation="relu", name="fc1"),
        layers.Dropout(0.4, name="drop"),
        layers.Dense(10, name="logits"),
    ], name="seq_cnn")


def functional_cnn() -> keras.Model:
    """The same network written with the functional API."""
    x = inp = keras.Input((28, 28, 1), name="image")
    for i, f in enumerate((4, 8, 8), 1):
        x = layers.Conv2D(f, 3, activation="relu", padding="same", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(padding="same", name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.4, name="drop")(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="functional_cnn")


def residual() -> keras.Model:
    """Two residual blocks joined by Add: one identity shortcut, one strided 1x1 projection
    (odd input size, so TensorFlow pads unevenly); ZeroPadding2D, a valid convolution, SAME
    average pooling, global average pooling."""
    x = inp = keras.Input((13, 13, 3), name="image")
    x = layers.ZeroPadding2D(((1, 2), (0, 1)), name="pad")(x)
    x = layers.Conv2D(6, 3, name="stem")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(6, 3, padding="same", activation="relu", name="a_conv1")(x)
    y = layers.Conv2D(6, 3, padding="same", name="a_conv2")(y)
    x = layers.Activation("relu", name="a_out")(layers.Add(name="a_add")([y, x]))
    y = layers.Conv2D(8, 3, strides=2, padding="same", activation="elu", name="b_conv1")(x)
    y = layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="b_conv2")(y)
    s = layers.Conv2D(8, 1, strides=2, name="b_proj")(x)
    x = layers.LeakyReLU(negative_slope=0.1, name="b_out")(layers.Add(name="b_add")([s, y]))
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(5, name="logits")(x), name="residual")


def inception() -> keras.Model:
    """An Inception module: four branches joined by Concatenate, one of them a max pool."""
    x = inp = keras.Input((10, 10, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    b1 = layers.Conv2D(4, 1, activation="relu", name="b1_1x1")(x)
    b2 = layers.Conv2D(3, 1, activation="relu", name="b2_reduce")(x)
    b2 = layers.Conv2D(4, 3, padding="same", activation="relu", name="b2_3x3")(b2)
    b3 = layers.Conv2D(2, 1, activation="relu", name="b3_reduce")(x)
    b3 = layers.Conv2D(2, 5, padding="same", activation="relu", name="b3_5x5")(b3)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="b4_pool")(x)
    b4 = layers.Conv2D(2, 1, activation="relu", name="b4_proj")(b4)
    x = layers.Concatenate(name="mixed")([b1, b2, b3, b4])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="probs")(x), name="inception")


def mobilenet() -> keras.Model:
    """MobileNet-style: Rescaling at the input, BatchNormalization, ReLU6, DepthwiseConv2D,
    SeparableConv2D, a squeeze-and-excitation gate (Multiply), an inverted residual (Add)."""
    x = inp = keras.Input((16, 16, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(epsilon=1e-5, name="dw_bn")(y)
    y = layers.ReLU(6.0, name="dw_relu6")(y)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    se = layers.Conv2D(2, 1, activation="relu", name="se_reduce")(se)
    se = layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(se)
    y = layers.Multiply(name="se_gate")([y, se])
    y = layers.Conv2D(8, 1, use_bias=False, name="project")(y)
    y = layers.BatchNormalization(name="project_bn")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", name="dw2")(x)
    x = layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep")(x)
    x = layers.BatchNormalization(name="sep_bn")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="drop")(x)
    return keras.Model(inp, layers.Dense(6, name="logits")(x), name="mobilenet")


def digits() -> keras.Model:
    """For scikit-learn's 8 x 8 digits (the round trip: import, fine-tune with cnnspec run, export)."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.Activation("relu", name="relu"),
        layers.MaxPooling2D(name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(10, name="logits"),
    ], name="digits")


def normalized() -> keras.Model:
    """Normalization at the input (adapted per channel) and on flat features, Conv2D with groups,
    SpatialDropout2D, Reshape to flat features, and a BatchNormalization of those features (the
    last three take their vectors in Keras' channels-last order of the flattened map)."""
    x = inp = keras.Input((8, 8, 3), name="image")
    x = layers.Normalization(name="norm")(x)
    x = layers.Conv2D(6, 3, padding="same", groups=3, activation="relu", name="grouped")(x)
    x = layers.SpatialDropout2D(0.3, name="sdrop")(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", groups=2, name="grouped2")(x)
    x = layers.Reshape((64,), name="reshape")(x)
    x = layers.BatchNormalization(name="flat_bn")(x)
    x = layers.Normalization(name="flat_norm")(x)
    return keras.Model(inp, layers.Dense(3, name="logits")(x), name="normalized")


def unsupported() -> keras.Model:
    """Two layers cnnspec has no type for (the test expects both named, nothing written)."""
    x = inp = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, name="conv")(x)
    x = layers.UpSampling2D(name="upsample")(x)
    x = layers.LayerNormalization(name="norm")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inp, layers.Dense(2, name="logits")(x), name="unsupported")


def tangled() -> keras.Model:
    """A graph the spec's nested blocks cannot express: conv's output feeds two Adds on different levels."""
    x = inp = keras.Input((6, 6, 2), name="image")
    t = layers.Conv2D(2, 3, padding="same", name="conv")(x)
    u = layers.Add(name="inner_add")([x, t])
    v = layers.Add(name="outer_add")([t, u])
    x = layers.Flatten(name="flatten")(v)
    return keras.Model(inp, layers.Dense(2, name="logits")(x), name="tangled")


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Seeded random weights; variances positive (Normalization's count, an integer, left alone)."""
    for w in model.weights:
        shape = tuple(w.shape)
        if "int" in str(w.dtype):
            continue
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            w.assign((rng.standard_normal(shape) * 0.4).astype("float32"))


def adapt(model: keras.Model, top: float, rng: np.random.Generator) -> None:
    """Adapt each Normalization, in order, to what reaches it from 32 random inputs (after the
    weights before it are set), as a user adapts one to the training data."""
    norms = [layer for layer in model.layers if isinstance(layer, layers.Normalization)]
    data = rng.uniform(0, top, (32, *model.input_shape[1:])).astype("float32") if norms else None
    for layer in norms:
        layer.adapt(keras.Model(model.inputs, layer.input).predict(data, verbose=0))


def deflate(path: Path) -> None:
    """Re-zip a .keras file with its members compressed: Keras stores them as they are, and its HDF5
    weights are mostly padding (a 40 KB file becomes about 6 KB); the members keep their bytes."""
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            z.writestr(zipfile.ZipInfo(info.filename, info.date_time), data, zipfile.ZIP_DEFLATED, 9)


def save(model: keras.Model, name: str, formats: tuple[str, ...], rng: np.random.Generator, out: Path) -> None:
    randomize(model, rng)
    if formats == ("json",):  # only the architecture: the import fails before weights matter
        (out / f"{name}.json").write_text(model.to_json() + "\n")
        print(f"{name}: config only")
        return
    top = 255 if name in ("mobilenet", "normalized") else 1
    adapt(model, top, rng)
    x = rng.uniform(0, top, (3, *model.input_shape[1:])).astype("float32")
    y = model.predict(x, verbose=0)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    np.savez(out / f"{name}.npz", x=x, y=y, params=model.count_params(), trainable=trainable)
    for fmt in formats:
        if fmt == "keras":
            model.save(out / f"{name}.keras")
            deflate(out / f"{name}.keras")
            again = keras.saving.load_model(out / f"{name}.keras").predict(x, verbose=0)
            np.testing.assert_allclose(again, y, rtol=0, atol=1e-6)  # Keras reads the deflated file back
        elif fmt == "h5":
            model.save(out / f"{name}.h5")  # Keras' legacy HDF5 format (it warns that it is legacy)
        elif fmt == "json":
            (out / f"{name}.json").write_text(model.to_json() + "\n")
            model.save_weights(out / f"{name}.weights.h5")
    print(f"{name}: {model.count_params()} params, formats {', '.join(formats)}")


MODELS: dict[str, tuple[Callable[[], keras.Model], tuple[str, ...]]] = {
    "seq_cnn": (seq_cnn, ("keras", "h5")),
    "functional_cnn": (functional_cnn, ("keras", "json")),
    "residual": (residual, ("keras",)),
    "inception": (inception, ("keras", "h5")),
    "mobilenet": (mobilenet, ("keras",)),
    "digits": (digits, ("keras",)),
    "normalized": (normalized, ("keras",)),
    "unsupported": (unsupported, ("json",)),  # config only
    "tangled": (tangled, ("json",)),  # config only
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="model names (default: all)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder (default: {OUT})")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    for name, (make, formats) in MODELS.items():
        if not args.only or name in args.only:
            save(make(), name, formats, np.random.default_rng(sum(map(ord, name))), args.out)


if __name__ == "__main__":
    main()
