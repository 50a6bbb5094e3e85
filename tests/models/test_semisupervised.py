"""Semi-supervised mode: a classifier on the latent mean trained with the few labels given."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from patchvae.config import TrainConfig
from patchvae.models import VAEConfig, build_model
from patchvae.train import fit

CONFIG = VAEConfig(
    input_shape=(1, 6, 6),
    hidden_dims=[16],
    latent_dim=2,
    classifier_classes=2,
    classifier_weight=3.0,
)


def test_only_labelled_samples_add_cross_entropy() -> None:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    x = torch.rand(4, 1, 6, 6)
    labels = torch.tensor([1, -1, 0, -1])
    out = model(x, sample=False, labels=labels)
    unsupervised = model(x, sample=False)
    assert out.class_logits is not None and out.class_logits.shape == (4, 2)
    assert out.class_loss is not None and out.class_loss[1] == 0 and out.class_loss[3] == 0
    expected_ce = F.cross_entropy(out.class_logits[[0, 2]], torch.tensor([1, 0]), reduction="sum")
    assert torch.allclose(out.loss, unsupervised.loss + 3.0 * expected_ce / 4, atol=1e-5)


def test_a_few_labels_train_the_classifier() -> None:
    x = torch.zeros(40, 1, 6, 6)
    x[20:, :, :3] = 1.0  # class 1: bright top half
    y = torch.full((40,), -1)
    y[[0, 1, 20, 21]] = torch.tensor([0, 0, 1, 1])  # four labels out of forty
    result = fit(
        CONFIG,
        TrainConfig(epochs=60, batch_size=40, optimizer="adam", learning_rate=1e-2, device="cpu"),
        x,
        y_train=y,
        progress=False,
    )
    with torch.no_grad():
        predicted = result.model.classifier(result.model.encode(x)[0]).argmax(dim=1)
    assert (predicted == torch.arange(40).ge(20).long()).float().mean() == 1.0
