"""The 15 MNIST-C corruptions: shape, range, determinism and the kind of operation each is."""

import numpy as np
import pytest
from skimage import color

from anomaly_core.data import mnist_c_corruptions as mc

RANDOM = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "rotate", "translate",
          "fog", "spatter", "dotted_line", "zigzag")


def ring_digit() -> np.ndarray:
    """A '0'-like ring, (28, 28) float in [0, 1], centred at (13.5, 13.5)."""
    r, c = np.mgrid[:28, :28]
    d = np.hypot((r - 13.5) / 9.0, (c - 13.5) / 6.0)
    return np.clip(1.0 - np.abs(d - 1.0) * 5.0, 0.0, 1.0)


def bar(vertical: bool) -> np.ndarray:
    x = np.zeros((28, 28))
    if vertical:
        x[6:22, 12:16] = 1.0
    else:
        x[12:16, 6:22] = 1.0
    return x


def orientation(x: np.ndarray) -> float:
    """Angle (rad) in (-pi/2, pi/2] of the intensity's principal axis, from the column axis."""
    r, c = np.mgrid[:28, :28]
    m = x.sum()
    rc, cc = (r * x).sum() / m, (c * x).sum() / m
    cov = np.cov(np.stack([(c - cc).ravel(), (r - rc).ravel()]), aweights=x.ravel())
    w, v = np.linalg.eigh(cov)
    vx, vy = v[:, -1]
    a = float(np.arctan2(vy, vx))  # the axis has no direction: fold into (-pi/2, pi/2]
    return a - np.pi if a > np.pi / 2 else a + np.pi if a <= -np.pi / 2 else a


def centroid(x: np.ndarray) -> np.ndarray:
    r, c = np.mgrid[:28, :28]
    return np.array([(r * x).sum(), (c * x).sum()]) / x.sum()


def run(name, x, seed=0):
    return mc.CORRUPTIONS[name](x.copy(), np.random.default_rng(seed))


def test_the_sixteen_names_match_tfds_order():
    from anomaly_core.data.mnist_corrupted import ALL_TFDS_CORRUPTIONS

    assert tuple(mc.CORRUPTIONS) == ALL_TFDS_CORRUPTIONS  # identity + the 15 corruptions


@pytest.mark.parametrize("name", list(mc.CORRUPTIONS))
def test_shape_range_determinism(name):
    x = ring_digit()
    a, b = run(name, x, 3), run(name, x, 3)
    assert a.shape == (28, 28) and np.all(np.isfinite(a))
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    if name in RANDOM:  # another seed draws another corruption (some seed among a few)
        assert any(not np.array_equal(a, run(name, x, s)) for s in range(4, 12))
    if name != "identity":
        assert np.abs(a - x).max() > 0.05


def test_identity():
    x = ring_digit()
    np.testing.assert_array_equal(run("identity", x), x)


def test_shot_noise_is_poisson_with_three_photons():
    x = np.full((28, 28), 0.5)
    x[:, :4] = 0.0
    y = run("shot_noise", x)
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-12)  # counts / 3
    assert np.all(y[:, :4] == 0)  # Poisson(0) = 0
    assert abs(y[:, 4:].mean() - 0.5) < 0.08  # unbiased (clip at 1 aside)


def test_impulse_noise_sets_a_sixth_of_pixels_to_0_or_1():
    x = np.full((28, 28), 0.5)
    y = run("impulse_noise", x)
    hit = y != 0.5
    assert set(np.unique(y[hit])) <= {0.0, 1.0}
    assert 0.12 < hit.mean() < 0.22  # amount 0.17
    assert 0.3 < (y[hit] == 1.0).mean() < 0.7


def test_glass_blur_blurs_and_keeps_mass():
    x = bar(True)
    y = run("glass_blur", x)
    assert y.max() < 0.95 and abs(y.sum() - x.sum()) / x.sum() < 0.1
    assert np.abs(np.diff(y, axis=1)).sum() < np.abs(np.diff(x, axis=1)).sum()


@pytest.mark.parametrize("angle", [0.0, 45.0, -30.0])
def test_motion_blur_kernel_is_one_sided_along_the_angle(angle):
    w, off = mc.motion_blur_kernel(10, 3.0, angle)
    assert w.shape == (21,) and off.shape == (21, 2)
    np.testing.assert_allclose(w.sum(), 1.0)
    assert np.all(np.diff(w) < 0) and tuple(off[0]) == (0, 0)
    a = np.deg2rad(angle)
    i = np.arange(21)
    assert np.all(np.abs(off[:, 1] - i * np.cos(a)) <= 0.5 + 1e-9)
    assert np.all(np.abs(off[:, 0] - i * np.sin(a)) <= 0.5 + 1e-9)


def test_motion_blur_smears_a_point_to_one_side_and_keeps_constants():
    flat = np.full((28, 28), 0.4)
    np.testing.assert_allclose(run("motion_blur", flat), 0.4, atol=1 / 255)
    x = np.zeros((28, 28))
    x[14, 14] = 1.0
    y = run("motion_blur", x)
    assert y[14, 14] > 0  # the first tap reads the pixel itself
    rows, cols = np.nonzero(y)
    # Every output pixel reads the point through a tap pointing away from it: the smear
    # lies on one side (columns <= 14 for |angle| <= 45 degrees) and is a line.
    assert cols.max() == 14 and cols.min() < 14 and len(rows) >= 5


def test_shear_slants_a_vertical_bar_by_0_4_rad_about_the_centre():
    x = bar(True)
    y = run("shear", x)
    np.testing.assert_allclose(centroid(y), centroid(x), atol=0.3)
    tilt = abs(abs(orientation(y)) - np.pi / 2)  # from vertical
    assert 0.3 < tilt < 0.5, tilt


def test_rotate_turns_a_bar_by_0_4_rad():
    x = bar(False)
    y = run("rotate", x)
    assert abs(abs(orientation(y)) - 0.4) < 0.06
    np.testing.assert_allclose(centroid(y), centroid(x), atol=0.3)
    np.testing.assert_allclose(y.sum(), x.sum(), rtol=0.05)


def test_scale_shrinks_to_70_percent_about_the_centre():
    x = np.zeros((28, 28))
    x[4:24, 4:24] = 1.0  # 20 x 20, centred
    y = run("scale", x)
    np.testing.assert_allclose(y.sum() / x.sum(), 0.49, atol=0.03)
    np.testing.assert_allclose(centroid(y), [13.5, 13.5], atol=1e-6)


def test_translate_shifts_by_3_pixels_each_way():
    x = ring_digit()
    y = run("translate", x)
    shifts = [(dr, dc) for dr in (-3, 3) for dc in (-3, 3)
              if np.allclose(np.roll(x, (dr, dc), axis=(0, 1))[3:-3, 3:-3], y[3:-3, 3:-3])]
    assert len(shifts) == 1


def test_brightness_is_hsv_value_plus_half():
    x = ring_digit()
    hsv = color.rgb2hsv(color.gray2rgb(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
    np.testing.assert_allclose(run("brightness", x), color.rgb2gray(color.hsv2rgb(hsv)), atol=1e-6)


def test_stripe_inverts_the_outer_columns():
    x = ring_digit()
    y = run("stripe", x)
    np.testing.assert_allclose(y[:, :7], 1 - x[:, :7])
    np.testing.assert_allclose(y[:, 21:], 1 - x[:, 21:])
    np.testing.assert_array_equal(y[:, 7:21], x[:, 7:21])


def test_plasma_fractal_and_fog():
    p = mc.plasma_fractal(np.random.default_rng(0), 64, 1.4)
    assert p.shape == (64, 64) and p.min() == 0.0 and p.max() == 1.0
    with pytest.raises(ValueError, match="power of two"):
        mc.plasma_fractal(np.random.default_rng(0), 28)
    x = ring_digit()
    y = run("fog", x)
    layer = y - x * x.max() / (x.max() + 3.0)  # the fog, already scaled
    assert layer.min() >= -1e-9 and layer.mean() > 0.1
    # Fog is smooth: neighbours differ far less than the digit's edges do.
    assert np.abs(np.diff(layer, axis=1)).mean() < 0.05
    assert np.ptp(y) < np.ptp(x)  # contrast falls


def test_spatter_blends_towards_mud_grey():
    x = ring_digit()
    changed = []
    for seed in range(5):
        y = run("spatter", x, seed)
        lo, hi = np.minimum(x, 63 / 255), np.maximum(x, 63 / 255)
        assert np.all(y >= lo - 1e-9) and np.all(y <= hi + 1e-9)
        changed.append(np.abs(y - x).max() > 0)
    assert any(changed)


def test_dotted_line_adds_dashes_in_every_other_column_pair():
    x = ring_digit()
    y = run("dotted_line", x)
    assert np.all(y >= x - 1e-12)
    added = (y - x).max(axis=0) > 0
    cols = np.arange(28)
    assert not added[(cols // 2) % 2 == 0].any() and added.any()
    # On the line: 1, columns c0 .. ceil(c1) - 1 (as in MNIST-C, the last column stays blank).
    np.testing.assert_allclose(mc.line_layer(0, 5, 27, 5)[5], [1.0] * 27 + [0.0])
    assert mc.line_layer(0, 5, 27, 5)[8].max() == 0  # 3 px away: nothing
    assert not mc.line_layer(3, 0, 3, 20).any()


def test_zigzag_alternates_about_its_line():
    cs, rs = mc.zigzag_vertices(10, 10)  # horizontal: rows 10 +- 2
    assert cs[0] == 2 and rs[0] == 10 and np.all(np.diff(cs) > 0)
    np.testing.assert_allclose(rs[1:-1], 10 + 2 * (-1) ** np.arange(len(rs) - 2))
    x = ring_digit()
    y = run("zigzag", x)
    assert np.all(y >= x - 1e-12)
    added = np.nonzero((y - x).max(axis=0) > 0)[0]
    assert added.min() >= 2 and added.max() <= 25


def test_canny_edges_outline_a_square():
    x = np.zeros((28, 28))
    x[8:20, 8:20] = 1.0
    y = run("canny_edges", x)
    assert set(np.unique(y)) == {0.0, 1.0}
    assert not y[11:17, 11:17].any() and y[6:22, 6:22].sum() == y.sum()


def test_corrupt_images_is_uint8_seeded_per_digit():
    digits = (np.stack([ring_digit(), bar(True), bar(False)]) * 255).astype(np.uint8)
    out = mc.corrupt_images(digits, "rotate", seed=1)
    assert out.shape == (3, 28, 28, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, mc.corrupt_images(digits[..., None], "rotate", seed=1))
    alone = mc.corrupt_images(digits[2:], "rotate", seed=1, indices=[2])
    np.testing.assert_array_equal(alone, out[2:])
    np.testing.assert_array_equal(mc.corrupt_images(digits, "identity", 0)[..., 0], digits)
    with pytest.raises(ValueError, match="unknown MNIST-C corruption 'smudge'"):
        mc.corrupt_images(digits, "smudge", 0)
    with pytest.raises(ValueError, match="expects \\(N, 28, 28"):
        mc.corrupt_images(digits[:, :20], "rotate", 0)
