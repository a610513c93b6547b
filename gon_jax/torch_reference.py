"""PyTorch rendering of the GON networks and the CAE baseline (docs/METHODS.md section 2), NCHW.

Written from the specification; it is the mirror the parity tests compare the JAX port
with and the target of `anomaly_core.interop.torch_import`. Attribute names follow the reference
code so state_dicts of the originals load: the conv GON keeps the notebooks'
`network` Sequential (Mathio11/GON_for_Image_Anomaly_Detection), the implicit GON is a
bare Sequential of `SirenLayer`s with a `.linear` each, the variational GON has
`fc21`/`fc22`/`main` (both cwkx/GON), the CAE `encoder`/`decoder`.

Needs the `torch` extra; nothing outside the parity tests and the converter imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gon_jax.layers import Stage, mnist_stages, mvtec_stages, vae32_stages
from gon_jax.variants import variant

BN_MOMENTUM = 0.1  # torch convention (flax momentum 0.9)

# The decoders' stage tables (one ConvTranspose2d each: out_channels, kernel, stride,
# padding) are shared with the Flax side: they are shapes, checked by the exact parameter
# counts; what this mirror checks is the computation.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU}
OUTPUTS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def conv_decoder_layers(nz: int, stages: Sequence[Stage], activation: str = "elu",
                        output: str = "tanh") -> list[nn.Module]:
    """[ConvT, BN, act] per stage but the last, then [ConvT, output]; all ConvT with bias."""
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    _check_choice("output", output, tuple(OUTPUTS))
    layers: list[nn.Module] = []
    width = nz
    for i, (out, k, s, p) in enumerate(stages):
        layers.append(nn.ConvTranspose2d(width, out, k, s, p, bias=True))
        if i < len(stages) - 1:
            layers += [nn.BatchNorm2d(out, eps=1e-5, momentum=BN_MOMENTUM), ACTIVATIONS[activation]()]
        width = out
    layers.append(OUTPUTS[output]())
    return layers


class ConvGON(nn.Module):
    """Conv GON decoder: z (B, nz) or (B, nz, 1, 1) -> image (B, C, S, S) (docs/METHODS.md 2.2/2.3).

    stages: e.g. mvtec_stages(124, 3) (S = 64, the default) or mnist_stages(64, 1) (S = 28).
    """

    def __init__(self, nz: int = 100, stages: Sequence[Stage] | None = None, activation: str = "elu",
                 output: str = "tanh"):
        super().__init__()
        stages = mvtec_stages() if stages is None else stages
        self.network = nn.Sequential(*conv_decoder_layers(nz, stages, activation, output))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.network(z)


class SirenLayer(nn.Module):
    """y = sin(w0 (W x + b)), or W x + b for the last layer (cwkx/GON)."""

    def __init__(self, in_f: int, out_f: int, w0: float = 30.0, is_first: bool = False,
                 is_last: bool = False):
        super().__init__()
        self.w0, self.is_last = w0, is_last
        self.linear = nn.Linear(in_f, out_f)
        bound = 1.0 / in_f if is_first else math.sqrt(6.0 / in_f) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return x if self.is_last else torch.sin(self.w0 * x)


class ImplicitGON(nn.Sequential):
    """SIREN over [coordinates, z]: (B, N, 2 + nz) -> (B, N, C) (docs/METHODS.md 2.4).

    dims = (2 + nz, hidden..., C); every layer but the last is a sine layer.
    """

    def __init__(self, nz: int = 32, hidden: Sequence[int] = (256, 256, 256, 256), channels: int = 1,
                 w0: float = 30.0):
        dims = [2 + nz, *hidden, channels]
        layers = [SirenLayer(dims[0], dims[1], w0, is_first=True)]
        layers += [SirenLayer(a, b, w0) for a, b in zip(dims[1:-2], dims[2:-1])]
        layers.append(SirenLayer(dims[-2], dims[-1], w0, is_last=True))
        super().__init__(*layers)

    def decode(self, z: torch.Tensor, image_size: int) -> torch.Tensor:
        """z (B, nz) -> image (B, C, S, S), pixel (h, w) from coordinate row h * S + w."""
        g = self(implicit_input(z, coordinate_grid(image_size, image_size)))
        return g.reshape(z.shape[0], image_size, image_size, -1).permute(0, 3, 1, 2)


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """(H*W, 2) pixel coordinates in [-1, 1]: ij meshgrid of linspace(H) x linspace(W).

    Row-major over (H, W) so that a (B, H*W, C) output reshapes to (B, H, W, C); equal to
    cwkx/GON's get_mgrid for square images.
    """
    rows = torch.linspace(-1.0, 1.0, height)
    cols = torch.linspace(-1.0, 1.0, width)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


def implicit_input(z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """[coords, z] per pixel: z (B, nz), coords (N, 2) -> (B, N, 2 + nz)."""
    b, n = z.shape[0], coords.shape[0]
    return torch.cat([coords.expand(b, n, 2), z[:, None, :].expand(b, n, z.shape[1])], dim=-1)


class VariationalGON(nn.Module):
    """Variational GON (docs/METHODS.md 2.5): z (B, nz) -> (p (B, C, S, S) in (0, 1), mu, logvar).

    Decoder stages default to vae32_stages() (S = 32) with ReLU, as in cwkx/GON.

    Training draws z = mu + eps * exp(logvar / 2) with eps passed in (for parity) or drawn;
    eval uses z = mu.
    """

    def __init__(self, nz: int = 48, stages: Sequence[Stage] | None = None, activation: str = "relu"):
        super().__init__()
        self.fc21 = nn.Linear(nz, nz)
        self.fc22 = nn.Linear(nz, nz)
        stages = vae32_stages() if stages is None else stages
        self.main = nn.Sequential(*conv_decoder_layers(nz, stages, activation, "sigmoid"))

    def forward(self, z: torch.Tensor, eps: torch.Tensor | None = None):
        mu, logvar = self.fc21(z), self.fc22(z)
        if self.training:
            eps = torch.randn_like(mu) if eps is None else eps
            latent = mu + eps * torch.exp(0.5 * logvar)
        else:
            latent = mu
        return self.main(latent[:, :, None, None]), mu, logvar


class ConvAutoencoder(nn.Module):
    """CAE baseline (docs/METHODS.md 2.7): (B, C, H, W) -> (B, C, H, W) in (0, 1), H, W divisible by 4."""

    def __init__(self, channels: int = 3, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        w1, w2 = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(w2, w1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(w1, channels, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


STAGE_LAYOUTS: dict[str, Callable[[int, int], tuple[Stage, ...]]] = {
    "mvtec": mvtec_stages, "mnist": mnist_stages, "vae32": vae32_stages}


def _stages(model_cfg: Any) -> tuple[Stage, ...]:
    _check_choice("config.model.preset", model_cfg.preset, tuple(STAGE_LAYOUTS))
    return STAGE_LAYOUTS[model_cfg.preset](model_cfg.ngf, model_cfg.channels)


def conv_gon(model_cfg: Any) -> nn.Module:
    """The conv GON's mirror (variants.VARIANTS['conv_gon'].torch_module)."""
    return ConvGON(model_cfg.nz, _stages(model_cfg), model_cfg.activation, model_cfg.out_activation)


def variational_gon(model_cfg: Any) -> nn.Module:
    """The variational GON's mirror: sigmoid output only (its BCE loss needs it)."""
    if model_cfg.out_activation != "sigmoid":
        raise ValueError("the variational GON mirror has a sigmoid output (its BCE loss needs it), "
                         f"got config.model.out_activation={model_cfg.out_activation!r}")
    return VariationalGON(model_cfg.nz, _stages(model_cfg), model_cfg.activation)


def implicit_gon(model_cfg: Any) -> nn.Module:
    """The implicit GON's (SIREN) mirror."""
    return ImplicitGON(model_cfg.nz, tuple(model_cfg.hidden), model_cfg.channels, float(model_cfg.w0))


def cae(model_cfg: Any) -> nn.Module:
    """The CAE baseline's mirror."""
    return ConvAutoencoder(model_cfg.channels, tuple(model_cfg.widths))


def build_model(model_cfg: Any) -> nn.Module:
    """The PyTorch mirror of gon_jax.build.build_gon_model(model_cfg) (same config fields): the
    builder its variant names (gon_jax/variants.py)."""
    return globals()[variant(model_cfg).torch_module](model_cfg)


def squared_error_loss(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Conv GON loss: sum over channels of (g - x)^2, mean over (B, H, W). NCHW inputs."""
    return ((g - x) ** 2).sum(1).mean()


def implicit_loss(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Implicit GON loss: (B, N, C) inputs, sum over pixels N, mean over batch and channels."""
    return ((g - x) ** 2).sum(1).mean()


def variational_loss(p: torch.Tensor, x: torch.Tensor, mu: torch.Tensor,
                     logvar: torch.Tensor) -> torch.Tensor:
    """BCE summed over pixels + KL(mu, logvar) summed over latents, both mean over batch."""
    bce = F.binary_cross_entropy(p.reshape(p.shape[0], -1), x.reshape(x.shape[0], -1),
                                 reduction="none").sum(1).mean()
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
    return bce + kld


def gradient_origin_latent(loss_at: Callable[[torch.Tensor], torch.Tensor], batch: int, nz: int,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """z = -d loss_at(z) / dz at z = 0 (B, nz), kept in the graph (create_graph=True)."""
    z0 = torch.zeros(batch, nz, dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_at(z0), [z0], create_graph=True)
    return -grad


def conv_gon_step(model: ConvGON, x: torch.Tensor, nz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One GON step of the notebooks (docs/METHODS.md 2.1): returns (z (B, nz), outer loss).

    The outer loss is differentiable w.r.t. the parameters through the inner gradient.
    """
    z = gradient_origin_latent(lambda z0: squared_error_loss(model(z0), x), x.shape[0], nz, x.dtype)
    return z, squared_error_loss(model(z), x)
