"""Convolutional VAE: stride-2 convolutions down, a dense bottleneck, transposed convolutions up.

Works for any patch size and channel count: every convolution halves the side (rounding down)
and each transposed convolution restores the exact side it came from (``output_padding``).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.base import ACTIVATIONS, VAE


class ConvVAE(VAE):
    """Encoder: [Conv(4, stride 2) + activation] x len(conv_channels), flatten, dense
    ``hidden_dims``, (mu, logvar). Decoder: the mirror image, ending in logits."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        act = ACTIVATIONS[config.activation]
        channels, height, width = config.input_shape
        sides = [(height, width)]
        for _ in config.conv_channels:
            sides.append((sides[-1][0] // 2, sides[-1][1] // 2))
        widths = [channels, *config.conv_channels]
        encoder: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            encoder += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), act()]
        self._bottom = (widths[-1], *sides[-1])
        flat = widths[-1] * sides[-1][0] * sides[-1][1]
        dense = [flat, *config.hidden_dims]
        encoder.append(nn.Flatten())
        for d_in, d_out in pairwise(dense):
            encoder += [nn.Linear(d_in, d_out), act()]
        self.encoder = nn.Sequential(*encoder)
        self.to_mu = nn.Linear(dense[-1], config.latent_dim)
        self.to_logvar = nn.Linear(dense[-1], config.latent_dim)
        back = [config.latent_dim, *reversed(dense[1:]), flat]
        decoder: list[nn.Module] = []
        for d_in, d_out in pairwise(back):
            decoder += [nn.Linear(d_in, d_out), act()]
        self.decoder_dense = nn.Sequential(*decoder)
        up: list[nn.Module] = []
        for i in range(len(config.conv_channels), 0, -1):
            target, source = sides[i - 1], sides[i]
            padding = (target[0] - 2 * source[0], target[1] - 2 * source[1])
            c_out = widths[i - 1]
            up.append(
                nn.ConvTranspose2d(widths[i], c_out, 4, stride=2, padding=1, output_padding=padding)
            )
            if i > 1:
                up.append(act())
        self.decoder_conv = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        return self.to_mu(hidden), self.to_logvar(hidden)

    def classifier_features(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        if self.config.classifier_input != "pooled":
            return mu
        maps = self.encoder[: 2 * len(self.config.conv_channels)](x)  # the convolutions only
        return torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3)), mu], dim=1)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_conv(self.decoder_dense(z).view(-1, *self._bottom))
