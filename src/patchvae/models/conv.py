"""Convolutional VAE: stride-2 convolutions down, a dense bottleneck, transposed convolutions up.

Works for any patch size and channel count: every convolution halves the side (rounding down)
and each transposed convolution restores the exact side it came from (``output_padding``).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.base import ACTIVATIONS, VAE, Encoded


class ConvVAE(VAE):
    """Encoder: [Conv(4, stride 2) + activation] x len(conv_channels) (``encoder``), then
    flatten and dense ``hidden_dims`` (``encoder_dense``), (mu, logvar). Decoder: the mirror
    image, ending in logits. The last convolution's maps also feed a pooled classifier."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        act = ACTIVATIONS[config.activation]
        channels, height, width = config.input_shape
        sides = [(height, width)]
        for _ in config.convolutions:
            sides.append((sides[-1][0] // 2, sides[-1][1] // 2))
        widths = [channels, *config.convolutions]
        convolutions: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            convolutions += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), act()]
        self.encoder = nn.Sequential(*convolutions)
        self._bottom = (widths[-1], *sides[-1])
        flat = widths[-1] * sides[-1][0] * sides[-1][1]
        dense = [flat, *config.hidden_dims]
        flatten: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in pairwise(dense):
            flatten += [nn.Linear(d_in, d_out), act()]
        self.encoder_dense = nn.Sequential(*flatten)
        self._register_load_state_dict_pre_hook(self._read_single_encoder)
        self.to_mu = nn.Linear(dense[-1], config.latent_dim)
        self.to_logvar = nn.Linear(dense[-1], config.latent_dim)
        back = [config.latent_dim, *reversed(dense[1:]), flat]
        decoder: list[nn.Module] = []
        for d_in, d_out in pairwise(back):
            decoder += [nn.Linear(d_in, d_out), act()]
        self.decoder_dense = nn.Sequential(*decoder)
        up: list[nn.Module] = []
        for i in range(len(config.convolutions), 0, -1):
            target, source = sides[i - 1], sides[i]
            padding = (target[0] - 2 * source[0], target[1] - 2 * source[1])
            c_out = widths[i - 1]
            up.append(
                nn.ConvTranspose2d(widths[i], c_out, 4, stride=2, padding=1, output_padding=padding)
            )
            if i > 1:
                up.append(act())
        self.decoder_conv = nn.Sequential(*up)

    def encoder_outputs(self, x: torch.Tensor) -> Encoded:
        maps = self.encoder(x)
        hidden = self.encoder_dense(maps)
        return Encoded(self.to_mu(hidden), self.to_logvar(hidden), maps, hidden)

    def _read_single_encoder(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints of patchvae 0.1 held the convolutions and the dense layers in one
        ``encoder``; its dense layers' weights move to ``encoder_dense``."""
        first_dense = 2 * len(self.config.convolutions)  # (convolution, activation) pairs
        for key in [k for k in state if k.startswith(f"{prefix}encoder.")]:
            index, rest = key[len(f"{prefix}encoder.") :].split(".", 1)
            if int(index) >= first_dense:
                state[f"{prefix}encoder_dense.{int(index) - first_dense}.{rest}"] = state.pop(key)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder_conv(self.decoder_dense(z).view(-1, *self._bottom))
