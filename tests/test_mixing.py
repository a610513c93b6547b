"""Mixup, CutMix and gradient-penalty interpolation weights (funetgan_jax/mixing.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funetgan_jax import mixing

# jitted once: op-by-op dispatch of the eager versions is slow on the shared CPU.
_cutmix_box = jax.jit(mixing.cutmix_box, static_argnums=(1, 2, 3))
_box_mask = jax.jit(mixing.box_mask, static_argnums=(1, 2))


def _reference_cutmix(lam, cy, cx, inverted, height, width):
    """boschresearch/unetgan mixup.CutMix with the random draws given, generalised to H x W."""
    r = np.sqrt(np.float32(1.0) - np.float32(lam))  # float32 like the JAX draw
    cut_h, cut_w = int(np.float32(height) * r), int(np.float32(width) * r)
    y1, y2 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    x1, x2 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    mask = np.ones((height, width), np.float32)
    mask[y1:y2, x1:x2] = 0.0
    if inverted:
        mask = 1.0 - mask
    return mask, (y1, y2, x1, x2)


def test_mixup_weights_real_by_lam():
    real = jnp.full((3, 2, 2, 1), 1.0)
    fake = jnp.full((3, 2, 2, 1), -1.0)
    mixed, lam = mixing.mixup(jax.random.key(0), real, fake)
    assert lam.shape == (3, 1, 1, 1)
    lam = np.asarray(lam)
    assert np.all((lam >= 0) & (lam < 1)) and np.ptp(lam) > 0  # per-sample draws
    # lam * 1 + (1 - lam) * (-1) = 2 lam - 1; a swapped mix would give 1 - 2 lam.
    np.testing.assert_allclose(np.asarray(mixed), np.broadcast_to(2 * lam - 1, (3, 2, 2, 1)), atol=1e-6)


def test_mixup_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        mixing.mixup(jax.random.key(0), jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 1)))


@pytest.mark.parametrize("height,width", [(16, 16), (9, 14)])
def test_cutmix_box_and_mask_match_the_reference(height, width):
    batch = 64
    box = jax.device_get(_cutmix_box(jax.random.key(3), batch, height, width))
    masks = np.asarray(_box_mask(box, height, width))
    assert masks.shape == (batch, height, width, 1)
    for b in range(batch):
        lam, cy, cx = float(box.lam[b]), int(box.centre_y[b]), int(box.centre_x[b])
        assert 0 <= lam < 1 and 0 <= cy < height and 0 <= cx < width
        expected, corners = _reference_cutmix(lam, cy, cx, bool(box.inverted[b]), height, width)
        assert (int(box.y1[b]), int(box.y2[b]), int(box.x1[b]), int(box.x2[b])) == corners
        np.testing.assert_array_equal(masks[b, ..., 0], expected)
        # box area: the count of "box" pixels equals the clipped side lengths' product
        box_value = 1.0 if box.inverted[b] else 0.0
        area = (corners[1] - corners[0]) * (corners[3] - corners[2])
        assert int(np.sum(masks[b] == box_value)) == area


def test_cutmix_box_side_hand_case():
    # lam = 0.19: sqrt(0.81) = 0.9, cut = int(16 * 0.9) = 14 -> box [c - 7, c + 7).
    box = mixing.CutMixBox(
        lam=jnp.array([0.19]),
        centre_y=jnp.array([8]),
        centre_x=jnp.array([2]),
        y1=jnp.array([1]),
        y2=jnp.array([15]),
        x1=jnp.array([0]),  # 2 - 7 clipped to 0
        x2=jnp.array([9]),
        inverted=jnp.array([False]),
    )
    mask = np.asarray(mixing.box_mask(box, 16, 16))[0, ..., 0]
    assert mask.sum() == 16 * 16 - 14 * 9
    assert mask[1, 0] == 0 and mask[14, 8] == 0 and mask[0, 0] == 1 and mask[15, 8] == 1 and mask[8, 9] == 1


def test_cutmix_statistics():
    batch, size = 4000, 16
    box = jax.device_get(_cutmix_box(jax.random.key(11), batch, size, size))
    masks = np.asarray(_box_mask(box, size, size))
    assert set(np.unique(masks)) <= {0.0, 1.0}
    # std of the inverted fraction is sqrt(0.25 / 4000) = 0.008; +-0.05 is > 6 sigma.
    assert abs(float(np.mean(box.inverted)) - 0.5) < 0.05
    assert abs(float(np.mean(box.lam)) - 0.5) < 0.05
    # non-inverted masks are real outside the box: their mean is 1 - box fraction.
    plain = ~np.asarray(box.inverted)
    area = (np.asarray(box.y2) - np.asarray(box.y1)) * (np.asarray(box.x2) - np.asarray(box.x1))
    np.testing.assert_allclose(masks[plain].mean(axis=(1, 2, 3)), 1 - area[plain] / size**2)


def test_cutmix_mask_jits_and_mixes():
    key = jax.random.key(5)
    expected = np.asarray(_box_mask(_cutmix_box(key, 4, 8, 12), 8, 12))
    real, fake = jnp.ones((4, 8, 12, 3)), jnp.zeros((4, 8, 12, 3))
    mixed, mask = jax.jit(mixing.cutmix)(key, real, fake)
    np.testing.assert_array_equal(np.asarray(mask), expected)
    np.testing.assert_array_equal(np.asarray(mixed), np.broadcast_to(expected, (4, 8, 12, 3)))


def test_consistency_mix_dispatch():
    real, fake = jnp.ones((2, 4, 4, 1)), jnp.zeros((2, 4, 4, 1))
    key = jax.random.key(1)
    mix = jax.jit(mixing.consistency_mix, static_argnums=3)
    _, lam = mix(key, real, fake, "mixup")
    _, mask = mix(key, real, fake, "cutmix")
    assert lam.shape == (2, 1, 1, 1) and mask.shape == (2, 4, 4, 1)
    assert mix(key, real, fake, "none") == (None, None)
    with pytest.raises(ValueError, match="consistency"):
        mixing.consistency_mix(key, real, fake, "cut_mix")


def test_interpolation_weights():
    a = np.asarray(mixing.interpolation_weights(jax.random.key(0), 5, 3))
    assert a.shape == (5, 1, 1, 3) and np.all((a >= 0) & (a < 1))
    assert np.all(np.ptp(a, axis=-1) > 0)  # channels drawn independently
    s = mixing.interpolation_weights(jax.random.key(0), 5, 3, mode="per_sample")
    assert s.shape == (5, 1, 1, 1)
    with pytest.raises(ValueError, match="interpolation"):
        mixing.interpolation_weights(jax.random.key(0), 5, 3, mode="per_pixel")
