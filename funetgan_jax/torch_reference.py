"""PyTorch rendering of the original f-UNetGAN's networks, NCHW.

The original repository (nnajeh/f-UNetGAN) does not run as committed; this module renders
its layers so that the parity tests can compare the JAX port with PyTorch, and so that its
state_dicts have the original's keys and shapes. Module attribute names follow the original
(`proj_z`, `g_blocks`, `input_layer`, `residual_conv_1`, `up_residual_conv1`, ...).

Spectral norm, `spectral_norm=`:
  'biggan' (the original): `BigGANConv2d` / `BigGANLinear` store `weight`, `bias`, `u0`
      (1, out) and `sv0` (1,) and run one power iteration in EVERY forward (the new u and
      sigma are written back only in training), in every generator, discriminator and
      encoder layer but the encoder's `input_layer` and `linear`, which use
      `torch.nn.utils.spectral_norm` as in the original.
  'torch': `torch.nn.utils.spectral_norm` everywhere (`weight_orig`, `weight_u`, `weight_v`).
Where this rendering departs from the original, and why (docs/PARITY.md):
  - sizes are parameters (width, image size, z_dim); the original hard-codes 128x128 and a
    1024-channel 4x4 start;
  - the generator's third CBAM takes the block's output width (the original builds it for
    64 channels after a 256-channel block, which cannot run);
  - switches the original lacks or cannot run: the 'conv' block (no shortcut), no attention
    (its AttentionBlock is undefined), encoder attention (E_ResidualConv rejects the
    argument), d_norm 'none', global pool 'mean', CBAM spatial norm 'none', tanh output.

Needs the `torch` extra; nothing outside the parity tests and the converter imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
IN_EPS = 1e-5
CBAM_BN_MOMENTUM = 0.01  # torch convention (flax momentum 0.99)
HEAD_BN_MOMENTUM = 0.1  # generator output BatchNorm: torch default (flax 0.9)
DISCRIMINATOR_MULTIPLIERS = (1, 2, 4, 8, 16)
ENCODER_MULTIPLIERS = (1, 2, 4, 8, 16, 16)
GENERATOR_MULTIPLIERS = (16, 16, 8, 4, 2, 1)


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


SN_EPS = 1e-12
SPECTRAL_NORMS = ("biggan", "torch")


class _PowerIterationSN:
    """BigGAN-style spectral norm as in the original's SNConv2d / SNLinear: buffers u0 (1, out)
    and sv0 (1,); every forward runs one power iteration from u0 and divides the weight by
    sigma = u'^T W v (gradient through W only); training writes u' and sigma back."""

    def _init_sn(self, out_features: int) -> None:
        self.register_buffer("u0", torch.randn(1, out_features))
        self.register_buffer("sv0", torch.ones(1))

    def normalised_weight(self) -> torch.Tensor:
        w = self.weight.view(self.weight.shape[0], -1)  # (out, fan)
        with torch.no_grad():
            v = F.normalize(self.u0 @ w, dim=1, eps=SN_EPS)  # (1, fan)
            u = F.normalize(v @ w.t(), dim=1, eps=SN_EPS)  # (1, out)
        sigma = (v @ w.t() @ u.t()).squeeze()
        if self.training:
            with torch.no_grad():
                self.u0.copy_(u)
                self.sv0.copy_(sigma.detach().view(1))
        return self.weight / sigma


class BigGANConv2d(nn.Conv2d, _PowerIterationSN):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int = 0):
        nn.Conv2d.__init__(self, in_ch, out_ch, kernel, padding=padding)
        self._init_sn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalised_weight(), self.bias, padding=self.padding)


class BigGANLinear(nn.Linear, _PowerIterationSN):
    def __init__(self, in_features: int, out_features: int):
        nn.Linear.__init__(self, in_features, out_features)
        self._init_sn(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalised_weight(), self.bias)


def sn_conv(in_ch: int, out_ch: int, kernel: int, mode: str = "torch") -> nn.Conv2d:
    """Spectral-normalised 'same' convolution with bias (stride 1), in `mode` (SPECTRAL_NORMS)."""
    _check_choice("spectral_norm", mode, SPECTRAL_NORMS)
    if mode == "biggan":
        return BigGANConv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    return nn.utils.spectral_norm(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2))


def sn_linear(in_features: int, out_features: int, mode: str = "torch") -> nn.Linear:
    _check_choice("spectral_norm", mode, SPECTRAL_NORMS)
    if mode == "biggan":
        return BigGANLinear(in_features, out_features)
    return nn.utils.spectral_norm(nn.Linear(in_features, out_features))


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, eps=IN_EPS, affine=False)


class ChannelGate(nn.Module):
    """CBAM channel gate: x * sigmoid(MLP(avgpool x) + MLP(maxpool x))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        # Index 0 is the reference's Flatten; kept so the keys read mlp.1 / mlp.3.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialConv(nn.Module):
    """Conv 7x7 (2 -> 1, no bias) followed by the optional BatchNorm."""

    def __init__(self, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = (nn.BatchNorm2d(1, eps=1e-5, momentum=CBAM_BN_MOMENTUM)
                   if norm == "batch" else None)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = self.conv(s)
        return self.bn(s) if self.bn is not None else s


class SpatialGate(nn.Module):
    """CBAM spatial gate: x * sigmoid(BN(conv7x7([max_c x, mean_c x])))."""

    def __init__(self, norm: str = "batch"):
        super().__init__()
        _check_choice("spatial_norm", norm, ("batch", "none"))
        self.spatial = SpatialConv(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class CBAM(nn.Module):
    """Channel gate then spatial gate (docs/METHODS.md 1.1). Shape-preserving."""

    def __init__(self, channels: int, reduction: int = 16, spatial_norm: str = "batch"):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate(spatial_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GResidualBlock(nn.Module):
    """Generator block (docs/METHODS.md 1.2): (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_ch: int, out_ch: int, spectral_norm: str = "biggan"):
        super().__init__()
        self.bn1 = instance_norm(in_ch)
        self.conv1 = sn_conv(in_ch, out_ch, 3, spectral_norm)
        self.bn2 = instance_norm(out_ch)
        self.conv2 = sn_conv(out_ch, out_ch, 3, spectral_norm)
        self.conv_mixin = sn_conv(in_ch, out_ch, 1, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_upsample(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.conv_mixin(_upsample(x))


def generator_multipliers(image_size: int) -> tuple[int, ...]:
    """Width multipliers of the 4x4 input and of each up stage for image_size = 4 * 2**n.

    n = 5 (128) gives the paper's (16, 16, 8, 4, 2, 1); smaller sizes keep the last
    n + 1 entries so the last stage always has width ch.
    """
    n = max(image_size // 4, 1).bit_length() - 1
    if n < 1 or n > 5 or image_size != 4 * 2**n:
        raise ValueError(f"image_size must be one of 8, 16, 32, 64, 128, got {image_size}")
    return GENERATOR_MULTIPLIERS[-(n + 1):]


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, C, S, S), S = image_size.

    Output in [0, 1) for output='relu_tanh' (reference), (-1, 1) for 'tanh', unbounded for 'linear'.
    """

    def __init__(self, z_dim: int = 100, ch: int = 64, img_channels: int = 3,
                 image_size: int = 128, cbam_reduction: int = 16,
                 spatial_norm: str = "batch", output: str = "relu_tanh", spectral_norm: str = "biggan"):
        super().__init__()
        _check_choice("output", output, ("relu_tanh", "tanh", "linear"))
        widths = [ch * m for m in generator_multipliers(image_size)]
        self.first_width = widths[0]
        self.output = output
        self.proj_z = sn_linear(z_dim, widths[0] * 4 * 4, spectral_norm)
        stages = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            stages.append(nn.ModuleList([GResidualBlock(w_in, w_out, spectral_norm),
                                         CBAM(w_out, cbam_reduction, spatial_norm)]))
        self.g_blocks = nn.ModuleList(stages)
        self.proj_o = nn.Sequential(
            nn.BatchNorm2d(widths[-1], eps=1e-5, momentum=HEAD_BN_MOMENTUM),
            nn.Conv2d(widths[-1], img_channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.proj_z(z).view(z.shape[0], self.first_width, 4, 4)
        for stage in self.g_blocks:
            for block in stage:
                h = block(h)
        h = self.proj_o(h)
        if self.output == "linear":
            return h
        if self.output == "relu_tanh":
            h = F.relu(h)
        return torch.tanh(h)


class ResidualConv(nn.Module):
    """Discriminator/encoder block (docs/METHODS.md 1.3, 1.4).

    block='residual' adds the shortcut, 'conv' omits it; pool='max' (discriminator) or
    'avg' (encoder); attention='cbam' applies CBAM after the pooling.
    """

    def __init__(self, in_ch: int, out_ch: int, preactivation: bool, downsample: bool,
                 attention: str = "none", block: str = "residual", pool: str = "max",
                 cbam_reduction: int = 16, spatial_norm: str = "batch", norm: str = "instance",
                 spectral_norm: str = "biggan"):
        super().__init__()
        _check_choice("attention", attention, ("cbam", "none"))
        _check_choice("block", block, ("residual", "conv"))
        _check_choice("pool", pool, ("max", "avg"))
        _check_choice("norm", norm, ("instance", "none"))
        self.preactivation = preactivation
        self.downsample = downsample
        self.pool = pool
        self.bn1 = instance_norm(in_ch) if norm == "instance" else nn.Identity()
        self.conv1 = sn_conv(in_ch, out_ch, 3, spectral_norm)
        self.bn2 = instance_norm(out_ch) if norm == "instance" else nn.Identity()
        self.conv2 = sn_conv(out_ch, out_ch, 3, spectral_norm)
        self.attention1 = (CBAM(out_ch, cbam_reduction, spatial_norm)
                           if attention == "cbam" else None)
        self.residual = block == "residual"
        self.learnable_sc = self.residual and (in_ch != out_ch or downsample)
        if self.learnable_sc:
            self.conv_sc = sn_conv(in_ch, out_ch, 1, spectral_norm)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2) if self.pool == "max" else F.avg_pool2d(x, 2)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            if self.learnable_sc:
                x = self.conv_sc(x)
            return self._pool(x) if self.downsample else x
        if self.downsample:
            x = self._pool(x)
        return self.conv_sc(x) if self.learnable_sc else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(x)
        h = F.relu(x) if self.preactivation else x
        h = self.conv1(h)
        h = self.conv2(F.leaky_relu(self.bn2(h), LEAKY_SLOPE))
        if self.downsample:
            h = self._pool(h)
        if self.attention1 is not None:
            h = self.attention1(h)
        return h + self._shortcut(x) if self.residual else h


class UNetDiscriminator(nn.Module):
    """U-Net critic (docs/METHODS.md 1.3) with the two switches block and attention.

    forward(x (B, C, S, S)) -> (d_enc (B,), d_dec (B, 1, S, S)); with
    return_features=True also (f_enc (B, 16ch), f_dec (B, ch, S, S)).
    """

    def __init__(self, ch: int = 64, img_channels: int = 3,
                 multipliers: Sequence[int] = DISCRIMINATOR_MULTIPLIERS,
                 block: str = "residual", attention: str = "cbam",
                 cbam_reduction: int = 16, spatial_norm: str = "batch", norm: str = "instance",
                 global_pool: str = "sum", spectral_norm: str = "biggan"):
        super().__init__()
        _check_choice("global_pool", global_pool, ("sum", "mean"))
        filters = [ch * m for m in multipliers]
        self.depth = len(filters)
        self.global_pool = global_pool
        kw = dict(block=block, cbam_reduction=cbam_reduction, spatial_norm=spatial_norm, norm=norm,
                  spectral_norm=spectral_norm)
        self.input_layer = ResidualConv(img_channels, filters[0], preactivation=False,
                                        downsample=False, attention=attention, **kw)
        for i in range(1, self.depth):
            setattr(self, f"residual_conv_{i}",
                    ResidualConv(filters[i - 1], filters[i], preactivation=True,
                                 downsample=True, attention=attention, **kw))
        for i in range(1, self.depth):
            level = self.depth - 1 - i  # skip level this up block joins
            # input: upsampled output of the level below (filters[level + 1]) + skip
            setattr(self, f"up_residual_conv{i}",
                    ResidualConv(filters[level + 1] + filters[level], filters[level], preactivation=False,
                                 downsample=False, attention="none", **kw))
        self.output_layer = nn.Conv2d(filters[0], 1, 1)
        self.linear = sn_linear(filters[-1], 1, spectral_norm)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        skips = [self.input_layer(x)]
        for i in range(1, self.depth):
            skips.append(getattr(self, f"residual_conv_{i}")(skips[-1]))
        f_enc = F.leaky_relu(skips[-1], LEAKY_SLOPE)
        f_enc = f_enc.sum(dim=(2, 3)) if self.global_pool == "sum" else f_enc.mean(dim=(2, 3))
        h = skips[-1]
        for i in range(1, self.depth):
            h = torch.cat([_upsample(h), skips[self.depth - 1 - i]], dim=1)
            h = getattr(self, f"up_residual_conv{i}")(h)
        d_enc = self.linear(f_enc).view(-1)
        d_dec = self.output_layer(h)
        if return_features:
            return d_enc, d_dec, f_enc, h
        return d_enc, d_dec


class Encoder(nn.Module):
    """Image (B, C, S, S) -> latent (B, z_dim) in (-1, 1) (docs/METHODS.md 1.4).

    The final spatial size is S / 2**(len(multipliers) - 1); the flatten is channel-major.
    """

    def __init__(self, z_dim: int = 100, ch: int = 64, img_channels: int = 3,
                 image_size: int = 128,
                 multipliers: Sequence[int] = ENCODER_MULTIPLIERS,
                 attention: str = "none", cbam_reduction: int = 16,
                 spatial_norm: str = "batch", spectral_norm: str = "biggan"):
        super().__init__()
        filters = [ch * m for m in multipliers]
        n_down = len(filters) - 1
        final = image_size // 2**n_down
        if final < 1 or final * 2**n_down != image_size:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{n_down}")
        self.n_blocks = n_down
        self.input_layer = sn_conv(img_channels, filters[0], 3)
        kw = dict(preactivation=True, downsample=True, attention=attention, pool="avg",
                  cbam_reduction=cbam_reduction, spatial_norm=spatial_norm, spectral_norm=spectral_norm)
        for i in range(1, n_down):
            setattr(self, f"residual_conv_{i}", ResidualConv(filters[i - 1], filters[i], **kw))
        self.output_layer = ResidualConv(filters[-2], filters[-1], **kw)
        self.linear = sn_linear(filters[-1] * final * final, z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x)
        for i in range(1, self.n_blocks):
            h = getattr(self, f"residual_conv_{i}")(h)
        h = self.output_layer(h)
        return torch.tanh(self.linear(h.reshape(h.shape[0], -1)))


def build_network(network: str, model_cfg: Any) -> nn.Module:
    """The PyTorch mirror of funetgan_jax.build's network for config.model.

    network: 'generator' | 'discriminator' | 'encoder'.
    """
    common = dict(cbam_reduction=model_cfg.cbam_reduction, spatial_norm=model_cfg.spatial_norm,
                  spectral_norm=model_cfg.spectral_norm)
    if network == "generator":
        return Generator(model_cfg.z_dim, model_cfg.width, model_cfg.channels, model_cfg.image_size,
                         output=model_cfg.generator_output, **common)
    if network == "discriminator":
        return UNetDiscriminator(model_cfg.width, model_cfg.channels, block=model_cfg.d_block,
                                 attention=model_cfg.d_attention, norm=model_cfg.d_norm,
                                 global_pool=model_cfg.d_global_pool, **common)
    if network == "encoder":
        return Encoder(model_cfg.z_dim, model_cfg.width, model_cfg.channels, model_cfg.image_size,
                       attention=model_cfg.e_attention, **common)
    raise ValueError(f"network must be 'generator', 'discriminator' or 'encoder', got {network!r}")
