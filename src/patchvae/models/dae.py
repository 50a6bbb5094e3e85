"""A denoising autoencoder for patches: a small U-Net trained to remove coarse noise.

After Kascenas et al., "Denoising autoencoders for unsupervised anomaly detection in brain
MRI" (MIDL 2022): Gaussian noise drawn on a coarse grid and upsampled (blobs the size of a few
pixels, like lesions) is added inside the brain, and the network learns to restore the clean
image. With skip connections and no bottleneck it reproduces healthy detail well; what it
takes for noise, bright or dark tissue that does not belong, it "restores" away, so the
residual marks anomalies. It shares the VAE family's interface: ``mu`` is its deepest maps
averaged over positions (for clusters and the latent plane), ``kl`` is zero.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.base import ACTIVATIONS, VAE, Encoded, VAEOutput
from patchvae.models.losses import reconstruction_loss


def _block(c_in: int, c_out: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), act(), nn.Conv2d(c_out, c_out, 3, padding=1), act()
    )


class DenoisingAE(VAE):
    """U-Net: a block of two 3x3 convolutions per level (``conv_channels``), 2x2 max pooling
    between levels, and on the way up nearest upsampling, the skip connection and a block."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        act = ACTIVATIONS[config.activation]
        widths = [config.input_shape[0], *config.convolutions]
        self.down = nn.ModuleList(_block(a, b, act) for a, b in pairwise(widths))
        self.up = nn.ModuleList(
            _block(widths[i + 1] + widths[i + 2], widths[i + 1], act)
            for i in reversed(range(len(widths) - 2))
        )
        self.head = nn.Conv2d(widths[1], widths[0], 1)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The restored image's logits and the deepest maps."""
        skips = []
        h = x
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = block(h)
            skips.append(h)
        bottom = h
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return self.head(h), bottom

    def draw_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The random numbers of a noised pass: Gaussian on the coarse ``noise_grid`` grid."""
        grid = self.config.noise_grid or 1
        shape = (x.shape[0], x.shape[1], grid, grid)
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

    def noise(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None,
        coarse: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Coarse noise for ``x``: Gaussian on a ``noise_grid`` grid (``coarse``, else drawn
        from ``generator``), upsampled bilinearly to the patch, zero on background (exactly 0
        after extraction) when ``noise_brain``."""
        config = self.config
        if coarse is None:
            coarse = self.draw_noise(x, generator)
        noise = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        noise = noise * (config.noise_std or 0.0)
        if config.noise_brain:
            noise = noise * (x.amax(dim=1, keepdim=True) > 0)
        return noise

    def encoder_outputs(self, x: torch.Tensor) -> Encoded:
        _, bottom = self._run(x)
        pooled = bottom.mean(dim=(2, 3))
        return Encoded(pooled, torch.zeros_like(pooled), bottom, pooled)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise ValueError("a dae restores images; it has no decoder from a latent code")

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        sample: bool = True,
        beta: float | torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Restore ``x`` (with ``sample``: ``x`` plus coarse noise, as in training; ``noise``:
        its coarse draws from :meth:`draw_noise`) and score the restoration against the
        clean ``x``."""
        seen = x + self.noise(x, generator, noise) if sample else x
        logits, bottom = self._run(seen)
        recon = reconstruction_loss(logits, x, self.config.reconstruction_loss)
        mu = bottom.mean(dim=(2, 3))
        return VAEOutput(
            logits=logits,
            z=mu,
            mu=mu,
            logvar=torch.zeros_like(mu),
            recon=recon,
            kl=torch.zeros_like(recon),
            loss=recon.mean(),
            hidden=mu,
        )
