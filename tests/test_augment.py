"""Augmentations: each one's effect on a known tensor, the batch-wise path against the per-sample
definition (torchvision.transforms.v2.functional), and their static checks at validate time."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from cnnspec.plugins.augment_ops import (
    CutMixOp,
    HorizontalFlipOp,
    MixupOp,
    RandomAffineOp,
    RandomCropOp,
    RandomErasingOp,
    RandomResizedCropOp,
)


def batch(n: int = 4, c: int = 2, h: int = 7, w: int = 9) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, c, h, w)


def test_random_crop_equals_pad_then_crop_per_sample():
    x, y = batch(), torch.arange(4)
    op = RandomCropOp(padding=3, fill=0.5)
    params = {"top": torch.tensor([0, 3, 6, 2]), "left": torch.tensor([6, 3, 0, 5])}
    out, y2 = op.apply(x, y, params)
    assert out.shape == x.shape and torch.equal(y2, y)
    for i in range(len(x)):
        padded = TF.pad(x[i], [3], fill=0.5)
        expected = TF.crop(padded, int(params["top"][i]), int(params["left"][i]), 7, 9)
        assert torch.equal(out[i], expected)
    # the centre crop (offset = padding) changes nothing; any crop moves pixels by at most the padding
    assert torch.equal(out[1], x[1])
    moved = out[0, :, 3:, :3]  # top 0, left 6: the image moved down 3 and left 3
    assert torch.equal(moved, x[0, :, :4, 3:6])


def test_random_crop_draws_offsets_within_the_padding():
    x = batch(n=200)
    params = RandomCropOp(2, 0.0).sample(x)
    assert int(params["top"].min()) == 0 and int(params["top"].max()) == 4  # all of [0, 2p] used
    out, _ = RandomCropOp(2, 0.0)(x, torch.zeros(200))
    assert out.shape == x.shape


def test_random_resized_crop_equals_torchvision_resized_crop_per_sample():
    x, y = batch(n=5, c=3, h=12, w=10), torch.arange(5)
    op = RandomResizedCropOp((0.08, 1.0), (3 / 4, 4 / 3), (12, 10))
    params = {"top": torch.tensor([0, 2, 5, 0, 11]), "left": torch.tensor([0, 3, 1, 9, 0]),
              "h": torch.tensor([12, 5, 7, 3, 1]), "w": torch.tensor([10, 6, 4, 1, 1])}
    out, y2 = op.apply(x, y, params)
    assert out.shape == x.shape and torch.equal(y2, y)
    for i in range(5):
        want = TF.resized_crop(x[i], *(int(params[k][i]) for k in ("top", "left", "h", "w")), [12, 10],
                               antialias=True)
        torch.testing.assert_close(out[i], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)  # the whole picture: unchanged
    assert torch.allclose(out[4], x[4, :, 11:, :1].expand(3, 12, 10))  # one pixel: filled with it
    # any batch size in, the input's size out (the op never depends on the batch being that size)
    assert RandomResizedCropOp((0.5, 1.0), (1.0, 1.0), (6, 6))(batch(n=3, h=9, w=7), y[:3])[0].shape == (3, 2, 6, 6)


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    x = torch.zeros(4000, 1, 64, 64)
    p = RandomResizedCropOp((0.08, 1.0), (3 / 4, 4 / 3), (64, 64)).sample(x)
    h, w, top, left = (p[k].double() for k in ("h", "w", "top", "left"))
    area, ratio = h * w / 64**2, w / h
    assert (h >= 1).all() and (top >= 0).all() and (top + h <= 64).all() and (left + w <= 64).all()
    # rounding to whole pixels moves a box's area and ratio a little past the drawn ones
    assert 0.07 < float(area.min()) < 0.1 and float(area.max()) <= 1.0
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.42
    # the same distribution as torchvision's draws (large areas of a ratio far from 1 do not fit and are
    # drawn again, so the mean area is below the 0.54 of uniform in [0.08, 1])
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(1)
    boxes = torch.tensor([RandomResizedCrop.get_params(x[0], [0.08, 1.0], [3 / 4, 4 / 3])[2:] for _ in range(4000)],
                         dtype=torch.float64)
    tv_area, tv_ratio = boxes[:, 0] * boxes[:, 1] / 64**2, boxes[:, 1] / boxes[:, 0]
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    assert (torch.quantile(area, q) - torch.quantile(tv_area, q)).abs().max() < 0.03
    assert (torch.quantile(ratio.log(), q) - torch.quantile(tv_ratio.log(), q)).abs().max() < 0.03
    assert float(top.float().std()) > 5 and float(left.float().std()) > 5  # each sample its own place
    narrow = RandomResizedCropOp((0.25, 0.25), (1.0, 1.0), (64, 64)).sample(x[:100])
    assert set(narrow["h"].tolist()) == {32} and set(narrow["w"].tolist()) == {32}
    # nothing fits a 1 x 40 picture with ratios near 1: torchvision's fallback, the centre cut to ratio 4/3
    wide = RandomResizedCropOp((0.08, 1.0), (3 / 4, 4 / 3), (1, 40)).sample(torch.zeros(50, 1, 1, 40))
    assert set(wide["h"].tolist()) == {1} and set(wide["w"].tolist()) <= {1} | set(range(1, 2))


def test_random_resized_crop_is_deterministic_under_a_seed():
    x, y = batch(n=16, c=3, h=16, w=16), torch.arange(16)
    op = RandomResizedCropOp((0.08, 1.0), (3 / 4, 4 / 3), (16, 16))
    torch.manual_seed(7)
    a = op(x, y)[0]
    torch.manual_seed(7)
    b = op(x, y)[0]
    c = op(x, y)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_flip_flips_and_equals_torchvision():
    x, y = batch(), torch.arange(4)
    flip = torch.tensor([True, False, True, False])
    out, _ = HorizontalFlipOp(0.5).apply(x, y, {"flip": flip})
    for i in range(4):
        assert torch.equal(out[i], TF.horizontal_flip(x[i]) if flip[i] else x[i])
    assert torch.equal(out[0, :, :, 0], x[0, :, :, -1])
    rate = HorizontalFlipOp(0.3).sample(torch.zeros(4000, 1, 2, 2))["flip"].float().mean()
    assert 0.25 < float(rate) < 0.35


def test_affine_by_whole_pixels_is_a_shift_with_zeros_and_identity_keeps_the_image():
    x = batch(n=2, h=6, w=6)
    op = RandomAffineOp(10.0, (0.2, 0.2), (0.9, 1.1))
    same, _ = op.apply(x, torch.zeros(2), {"angle": torch.zeros(2), "dx": torch.zeros(2), "dy": torch.zeros(2),
                                            "scale": torch.ones(2)})
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    shifted, _ = op.apply(x, torch.zeros(2), {"angle": torch.zeros(2), "dx": torch.tensor([1.0, 0.0]),
                                               "dy": torch.tensor([0.0, -2.0]), "scale": torch.ones(2)})
    torch.testing.assert_close(shifted[0, :, :, 1:], x[0, :, :, :-1], atol=1e-6, rtol=0)  # right by 1
    assert float(shifted[0, :, :, 0].abs().max()) < 1e-6
    torch.testing.assert_close(shifted[1, :, :-2, :], x[1, :, 2:, :], atol=1e-6, rtol=0)  # up by 2
    # a quarter turn of a square image is a transpose-and-flip: same pixels, no blur
    turned, _ = op.apply(x, torch.zeros(2), {"angle": torch.tensor([90.0, -90.0]), "dx": torch.zeros(2),
                                              "dy": torch.zeros(2), "scale": torch.ones(2)})
    ref = torch.rot90(x[0], 1, dims=(1, 2))
    assert torch.allclose(turned[0], ref, atol=1e-5) or torch.allclose(turned[0], torch.rot90(x[0], -1, dims=(1, 2)),
                                                                       atol=1e-5)


def test_random_erasing_equals_torchvision_erase_per_sample():
    x, y = batch(), torch.arange(4)
    params = {"erase": torch.tensor([True, True, False, True]), "top": torch.tensor([0, 2, 1, 6]),
              "left": torch.tensor([0, 4, 1, 8]), "h": torch.tensor([3, 2, 2, 1]), "w": torch.tensor([4, 5, 2, 1])}
    out, _ = RandomErasingOp(0.5, (0.02, 0.33), (0.3, 3.3), value=0.25).apply(x, y, params)
    for i in range(4):
        if params["erase"][i]:
            expected = TF.erase(x[i], int(params["top"][i]), int(params["left"][i]), int(params["h"][i]),
                                int(params["w"][i]), torch.tensor(0.25))
        else:
            expected = x[i]
        assert torch.equal(out[i], expected)
    drawn = RandomErasingOp(1.0, (0.1, 0.2), (0.5, 2.0), 0.0).sample(torch.zeros(500, 1, 20, 20))
    assert bool(((drawn["top"] + drawn["h"]) <= 20).all() and ((drawn["left"] + drawn["w"]) <= 20).all())


def test_mixup_blends_images_and_labels():
    x, y = batch(), torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 0, 3, 2])
    out, t = MixupOp(0.2, 3).apply(x, y, {"lam": torch.tensor(0.7), "perm": perm})
    torch.testing.assert_close(out, 0.7 * x + 0.3 * x[perm])
    torch.testing.assert_close(t.sum(1), torch.ones(4))
    torch.testing.assert_close(t[0], torch.tensor([0.7, 0.3, 0.0]))


def test_cutmix_pastes_a_box_and_weighs_labels_by_area():
    x, y = batch(h=4, w=4), torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 0, 3, 2])
    out, t = CutMixOp(1.0, 3).apply(x, y, {"box": torch.tensor([0, 0, 2, 2]), "perm": perm})
    assert torch.equal(out[:, :, :2, :2], x[perm, :, :2, :2]) and torch.equal(out[:, :, 2:, :], x[:, :, 2:, :])
    torch.testing.assert_close(t[0], torch.tensor([0.75, 0.25, 0.0]))  # 4 of 16 pixels pasted


def test_ops_draw_from_the_global_random_state():
    x = batch(n=50)
    torch.manual_seed(3)
    a = RandomErasingOp(0.5, (0.1, 0.3), (0.5, 2.0), 0.0)(x, torch.zeros(50))[0]
    torch.manual_seed(3)
    b = RandomErasingOp(0.5, (0.1, 0.3), (0.5, 2.0), 0.0)(x, torch.zeros(50))[0]
    assert torch.equal(a, b)


SPEC = """\
input: {input}
layers: [{layers}]
data:
  dataset: {{type: synthetic, shape: {input}, classes: 2, train_size: 32, test_size: 8}}
  augment:
    {augment}
train: {{epochs: 1, device: cpu{loss}}}
"""


@pytest.mark.parametrize(("input", "layers", "augment", "loss", "message"), [
    ("[16]", "{type: linear, out_features: 2}", "- horizontal_flip", "",
     "6:7: error: data.augment[0] horizontal_flip: needs image samples (channels x height x width), "
     "but the input is 16"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_crop, padding: 2, size: 13}", "",
     "6:39: error: data.augment[0] random_crop: a crop of 13 x 13 is larger than the padded image 12 x 12"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_crop, padding: 2, size: 10}", "",
     "would change the input shape 1 x 8 x 8"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- mixup", ", loss: nll_loss",
     "6:7: error: data.augment[0] mixup: mixes labels into class probabilities, which the loss 'nll_loss' "
     "cannot take; use cross_entropy"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- horizontal_fip", "",
     "unknown augmentation type 'horizontal_fip' (did you mean 'horizontal_flip'?)"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_affine, degree: 10}", "",
     "unknown key 'degree' (did you mean 'degrees'?)"),
    ("[16]", "{type: linear, out_features: 2}", "- random_resized_crop", "",
     "6:7: error: data.augment[0] random_resized_crop: needs image samples (channels x height x width), "
     "but the input is 16"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_resized_crop, scale: [0.9, 0.2]}", "",
     "6:35: error: data.augment[0] random_resized_crop: scale is [low, high] with low <= high, not [0.9, 0.2]"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_resized_crop, ratio: [2, 0.5]}", "",
     "6:35: error: data.augment[0] random_resized_crop: ratio is [low, high] with low <= high, not [2, 0.5]"),
    ("[1, 8, 8]", "flatten, {type: linear, out_features: 2}", "- {type: random_resized_crop, scale: [0.5, 1.5]}", "",
     "6:48: error: data.augment[0] random_resized_crop: scale[1]: must be <= 1.0, got 1.5"),
])
def test_augmentations_that_cannot_apply_are_located_errors(cli, write, input, layers, augment, loss, message):
    res = cli("validate", write(SPEC.format(input=input, layers=layers, augment=augment, loss=loss)))
    assert res.code == 1
    assert message in res.out, res.out


def test_only_training_batches_are_augmented(cli, write, tmp_path, monkeypatch):
    """A validation and a test split beside 24 training samples at batch 6: the crop runs on the 4
    training batches of the epoch and never on what is evaluated."""
    seen: list[int] = []
    real = RandomResizedCropOp.apply

    def counted(self, x, y, params):  # type: ignore[no-untyped-def]
        seen.append(len(x))
        return real(self, x, y, params)

    monkeypatch.setattr(RandomResizedCropOp, "apply", counted)
    spec = write(SPEC.format(input="[1, 8, 8]", layers="flatten, {type: linear, out_features: 2}",
                             augment="- random_resized_crop", loss="").replace(
        "  augment:", "  batch_size: 6\n  val_split: 0.25\n  augment:"))
    assert cli("run", spec, "--quiet", "--output", str(tmp_path / "r")).code == 0
    assert seen == [6] * 4  # 24 training samples after the validation split, 4 batches of 6, 1 epoch


def test_a_spec_with_every_augmentation_trains(cli, write, tmp_path):
    augment = ("- {type: random_crop, padding: 1}\n    - random_resized_crop\n    - horizontal_flip\n"
               "    - {type: random_affine, degrees: 10, "
               "translate: [0.1, 0.1], scale: [0.9, 1.1]}\n    - random_erasing\n    - mixup\n    - cutmix")
    spec = write(SPEC.format(input="[1, 8, 8]", layers="{type: conv2d, out_channels: 4, kernel_size: 3}, flatten, "
                             "{type: linear, out_features: 2}", augment=augment, loss=""))
    assert cli("validate", spec).code == 0
    res = cli("run", spec, "--quiet", "--output", str(tmp_path / "r"))
    assert res.code == 0, res.err
    text = (tmp_path / "r" / "spec.yaml").read_text()
    assert "random_erasing" in text and "alpha: 1.0" in text  # the resolved spec lists them with defaults
