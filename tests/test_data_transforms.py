"""Resize, mask binarisation, channels, value range and RandomResizedCrop."""

import math

import numpy as np
import pytest

from anomaly_core.data import transforms


def test_resize_is_antialiased():
    # A 1-px checkerboard shrunk 2x: a point-sampling resize would keep 0/1 values,
    # an antialiased one averages every 2x2 cell to 0.5.
    board = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[..., None]
    out = transforms.resize_image(board, 16)
    assert out.shape == (16, 16, 1)
    # The border rows renormalise a clipped filter, so check the interior.
    np.testing.assert_allclose(out[1:-1, 1:-1], 0.5, atol=1e-5)
    np.testing.assert_allclose(out, 0.5, atol=0.02)


def test_resize_keeps_constant_planes_and_channels():
    image = np.stack([np.full((20, 30), v, np.float32) for v in (0.1, 0.5, 0.9)], -1)
    out = transforms.resize_image(image, 8)
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out, np.broadcast_to([0.1, 0.5, 0.9], out.shape), atol=1e-6)


def test_mask_resize_binarises_at_half_and_keeps_thin_lines():
    mask = np.zeros((32, 32), np.float32)
    # PIL's 2x bilinear weights are (1, 3, 3, 1) / 8 over input pixels
    # 2j-1 .. 2j+2 of output pixel j.
    mask[:, 10:12] = 1.0  # output column 5: 3/8 + 3/8; columns 4 and 6: 1/8
    mask[4:12, 20:28] = 1.0  # output rows 2..5 and columns 10..13
    out = transforms.resize_mask(mask, 16)
    assert set(np.unique(out)) == {0.0, 1.0}
    expected = np.zeros((16, 16), np.float32)
    expected[:, 5] = 1.0
    expected[2:6, 10:14] = 1.0
    np.testing.assert_array_equal(out, expected)
    # A one-pixel line reaches only 3/8 < 0.5 and vanishes.
    thin = np.zeros((32, 32), np.float32)
    thin[:, 10] = 1.0
    assert transforms.resize_mask(thin, 16).sum() == 0


def test_to_channels_and_value_range():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.2, 0.4, 0.6]]], np.float32)
    gray = transforms.to_channels(rgb, 1)
    np.testing.assert_allclose(
        gray[..., 0], [[0.299, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6]], rtol=1e-6
    )
    np.testing.assert_array_equal(transforms.to_channels(gray, 3)[..., 2], gray[..., 0])
    np.testing.assert_allclose(transforms.to_value_range(rgb, (-1.0, 1.0)), rgb * 2 - 1)
    assert transforms.to_value_range(rgb, (0.0, 1.0)) is rgb


@pytest.mark.parametrize("height, width", [(64, 64), (40, 90)])
def test_random_resized_crop_box_respects_scale_and_ratio(height, width):
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = transforms.random_resized_crop_box(rng, height, width, (0.5, 1.0))
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # Rounding of w and h moves area and ratio by at most one pixel each.
        assert (h - 1) * (w - 1) <= height * width and (h + 1) * (w + 1) >= 0.5 * height * width
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1


def test_random_resized_crop_fallback_is_torchvision_centre_crop():
    # 10 x 100 at full area: no aspect ratio in [3/4, 4/3] fits, so torchvision
    # falls back to h = 10, w = round(10 * 4/3) = 13, centred: left = (100-13)//2.
    box = transforms.random_resized_crop_box(np.random.default_rng(0), 10, 100, (1.0, 1.0))
    assert box == (0, 43, 10, 13)


def test_augment_with_full_scale_is_identity_or_flip():
    # scale (1, 1) on a square: only aspect 1 fits, which the log-uniform draw
    # never hits exactly, so the fallback is the whole image.
    image = np.random.default_rng(1).uniform(size=(12, 12, 3)).astype(np.float32)
    mask = np.zeros((12, 12), np.float32)
    mask[2:5, 0:3] = 1
    flips = 0
    for seed in range(20):
        out, out_mask = transforms.augment(
            image, mask, np.random.default_rng(seed), crop_scale=(1.0, 1.0), hflip=True
        )
        flipped = np.allclose(out, image[:, ::-1], atol=1e-6)
        assert flipped or np.allclose(out, image, atol=1e-6)
        np.testing.assert_array_equal(out_mask, mask[:, ::-1] if flipped else mask)
        flips += flipped
    assert 0 < flips < 20


def test_augment_crop_matches_manual_crop_and_resize():
    image = np.random.default_rng(2).uniform(size=(32, 32, 1)).astype(np.float32)
    mask = np.zeros((32, 32), np.float32)
    box = transforms.random_resized_crop_box(np.random.default_rng(5), 32, 32, (0.5, 1.0))
    out, _ = transforms.augment(
        image, mask, np.random.default_rng(5), crop_scale=(0.5, 1.0), hflip=False
    )
    top, left, h, w = box
    expected = transforms.resize_image(image[top : top + h, left : left + w], 32)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert not math.isclose(float(np.abs(out - image).max()), 0.0)
