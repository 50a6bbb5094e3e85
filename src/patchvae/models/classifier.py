"""A small convolutional classifier of square single-channel images: what self-training
(``patchvae.train.selftrain``) teaches a latent's clusters to."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClusterClassifier(nn.Module):
    """Two 3x3 convolutions (32 and 64 channels, each followed by 2x2 max pooling), 128
    hidden units, one output per cluster. Input: square single-channel images,
    ``(n, side * side)`` or ``(n, 1, side, side)``, ``side`` divisible by 4."""

    def __init__(self, side: int, n_clusters: int) -> None:
        super().__init__()
        if side % 4:
            raise ValueError(f"side must be divisible by 4, got {side}")
        self.side = side
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.hidden = nn.Linear(64 * (side // 4) ** 2, 128)
        self.out = nn.Linear(128, n_clusters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, self.side, self.side)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.out(F.relu(self.hidden(x.flatten(1))))
