"""What a training step is fed: seeded batches, and the labelled samples of a semi-supervised
run (class-balanced, optionally turned and flipped)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patchvae.models.base import VAE


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a seeded permutation of range(n) cut into ``batch_size`` pieces; the
    last piece keeps the remainder, so every sample is seen once whatever ``batch_size`` is.

    Example
    -------
    >>> [len(b) for b in batch_indices(37, 10, torch.Generator().manual_seed(0))]
    [10, 10, 10, 7]
    """
    return list(torch.randperm(n, generator=generator).split(batch_size))


class LabelledBatches:
    """The few labelled samples of a semi-supervised run, served to every training step.

    With a handful of labels among thousands of samples, a random batch rarely holds one, so
    the classifier would hardly learn. Instead each step draws ``size`` labelled samples,
    class-balanced and with replacement, optionally under a random flip/quarter turn, and
    returns the classifier's mean cross-entropy on them.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int, augment: bool) -> None:
        known = torch.nonzero(y >= 0).flatten()
        self.x, self.y = x[known], y[known]
        classes = torch.unique(self.y)
        self.by_class = [torch.nonzero(self.y == c).flatten().cpu() for c in classes]
        self.size, self.augment = size, augment

    def loss(self, model: VAE, generator: torch.Generator) -> torch.Tensor:
        if not self.by_class:
            return torch.zeros((), device=self.x.device)
        pick = torch.randint(len(self.by_class), (self.size,), generator=generator)
        index = torch.stack(
            [
                members[torch.randint(len(members), (1,), generator=generator)[0]]
                for members in (self.by_class[int(c)] for c in pick)
            ]
        ).to(self.x.device)
        x = self.x[index]
        if self.augment:
            which = torch.randint(8, (self.size,), generator=generator)
            if x.shape[2] != x.shape[3]:  # not square: half turns and flips only
                which = which // 2 * 2
            x = dihedral(x, which)
        return F.cross_entropy(model.classify(x), self.y[index])


def dihedral(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Turn each image ``x[i]`` (N, C, H, W) by the element ``which[i]`` (0-7) of the square's
    symmetry group: ``which % 4`` quarter turns, then a left-right flip if ``which >= 4`` (odd
    quarter turns need H = W).

    Example
    -------
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> dihedral(x, torch.tensor([4])).flatten().tolist()
    [1.0, 0.0, 3.0, 2.0]
    """
    out = torch.empty_like(x)
    for k in range(8):
        chosen = torch.nonzero(which.to(x.device) == k).flatten()
        if chosen.numel():
            turned = torch.rot90(x[chosen], k % 4, dims=(2, 3))
            out[chosen] = torch.flip(turned, dims=(3,)) if k >= 4 else turned
    return out
