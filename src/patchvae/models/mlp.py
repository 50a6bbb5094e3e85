"""The fully connected VAE: the network of the 2016 Keras example."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.base import ACTIVATIONS, VAE, Encoded


class MLPVAE(VAE):
    """Fully connected VAE: flatten, hidden layers, (mu, logvar); mirror for the decoder.

    With ``hidden_dims=[256]`` and ``latent_dim=2`` on 28 x 28 inputs this is the network of the
    2016 Keras example (784-256-2, ReLU hidden, sigmoid output).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        act = ACTIVATIONS[config.activation]
        widths = [config.input_dim, *config.hidden_dims]
        encoder: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in pairwise(widths):
            encoder += [nn.Linear(width_in, width_out), act()]
        self.encoder = nn.Sequential(*encoder)
        self.to_mu = nn.Linear(widths[-1], config.latent_dim)
        self.to_logvar = nn.Linear(widths[-1], config.latent_dim)
        back = [config.latent_dim, *reversed(config.hidden_dims)]
        decoder: list[nn.Module] = []
        for width_in, width_out in pairwise(back):
            decoder += [nn.Linear(width_in, width_out), act()]
        decoder.append(nn.Linear(back[-1], config.input_dim))
        self.decoder = nn.Sequential(*decoder)
        if config.init == "glorot_uniform":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    def encoder_outputs(self, x: torch.Tensor) -> Encoded:
        hidden = self.encoder(x)
        return Encoded(self.to_mu(hidden), self.to_logvar(hidden), hidden=hidden)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.config.input_shape)
