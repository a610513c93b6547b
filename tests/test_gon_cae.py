"""Convolutional autoencoder baseline: parameter count, PyTorch equality, loss, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_gon_layers import n_params

from gon_jax.cae import ConvAutoencoder
from gon_jax.losses import cae_mse_loss


def test_parameter_count_and_shape():
    # Conv(3->32, 3x3): 3*32*9 + 32 = 896;   Conv(32->64): 32*64*9 + 64 = 18,496
    # ConvT(64->32, 3x3): 64*32*9 + 32 = 18,464;   ConvT(32->3): 32*3*9 + 3 = 867
    expected = 896 + 18_496 + 18_464 + 867
    model = ConvAutoencoder()
    x = jnp.zeros((2, 64, 64, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert n_params(variables) == expected == 38_723
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 64, 64, 3)


def test_equals_torch_reference():
    w1, w2, c = 4, 6, 3
    ref = torch.nn.ModuleDict({
        "encoder": torch.nn.Sequential(
            torch.nn.Conv2d(c, w1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
            torch.nn.Conv2d(w1, w2, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2)),
        "decoder": torch.nn.Sequential(
            torch.nn.ConvTranspose2d(w2, w1, 3, stride=2, padding=1, output_padding=1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(w1, c, 3, stride=2, padding=1, output_padding=1), torch.nn.Sigmoid())})

    def tensor(layer, transpose_axes):
        return {"kernel": jnp.asarray(layer.weight.detach().numpy().transpose(*transpose_axes)),
                "bias": jnp.asarray(layer.bias.detach().numpy())}

    # Conv2d (out, in, kh, kw) and ConvTranspose2d (in, out, kh, kw) both take permute(2, 3, 1, 0).
    params = {"conv0": tensor(ref["encoder"][0], (2, 3, 1, 0)), "conv1": tensor(ref["encoder"][3], (2, 3, 1, 0)),
              "convt0": tensor(ref["decoder"][0], (2, 3, 1, 0)), "convt1": tensor(ref["decoder"][2], (2, 3, 1, 0))}
    x = np.random.default_rng(0).uniform(0, 1, (2, c, 12, 16)).astype(np.float32)
    want = ref["decoder"](ref["encoder"](torch.from_numpy(x))).detach().numpy().transpose(0, 2, 3, 1)
    got = jax.jit(ConvAutoencoder(c, (w1, w2)).apply)({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert got.shape == (2, 12, 16, 3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    assert 0.0 < float(got.min()) and float(got.max()) < 1.0


def test_mse_loss_by_hand():
    recon = jnp.array([0.0, 0.5, 1.0, 0.25]).reshape(1, 2, 2, 1)
    x = jnp.array([1.0, 0.5, 0.0, 0.75]).reshape(1, 2, 2, 1)
    assert float(cae_mse_loss(recon, x)) == pytest.approx((1 + 0 + 1 + 0.25) / 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvAutoencoder(1).init(jax.random.key(0), jnp.zeros((1, 6, 8, 1)))
    with pytest.raises(ValueError, match="config.model.widths"):
        ConvAutoencoder(1, (4,))
