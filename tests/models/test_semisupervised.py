"""Semi-supervised mode: a classifier on the latent mean trained with the few labels given."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchvae.batches import LabelledBatches, dihedral
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


@pytest.mark.parametrize("labelled_batch_size", [0, 8])
def test_a_few_labels_train_the_classifier(labelled_batch_size: int) -> None:
    x = torch.zeros(40, 1, 6, 6)
    x[20:, :, 2:4, 2:4] = 1.0  # class 1: a bright centre (the same under any flip or turn)
    y = torch.full((40,), -1)
    y[[0, 1, 20, 21]] = torch.tensor([0, 0, 1, 1])  # four labels out of forty
    result = fit(
        CONFIG,
        TrainConfig(
            epochs=60,
            batch_size=40,
            optimizer="adam",
            learning_rate=1e-2,
            device="cpu",
            labelled_batch_size=labelled_batch_size,
        ),
        x,
        y_train=y,
        progress=False,
    )
    with torch.no_grad():
        predicted = result.model.classify(x).argmax(dim=1)
    assert (predicted == torch.arange(40).ge(20).long()).float().mean() == 1.0


def test_labelled_batches_are_class_balanced_and_only_labelled() -> None:
    x = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    y = torch.full((50,), -1)
    y[:9] = 0  # nine healthy labels, one lesion label
    y[40] = 1

    class Spy(torch.nn.Module):
        """Records which samples the classifier is shown."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[torch.Tensor] = []
            self.classifier = torch.nn.Linear(1, 2)

        def classify(self, batch: torch.Tensor) -> torch.Tensor:
            self.seen.append(batch[:, 0, 0, 0].clone())
            return self.classifier(batch[:, 0, :1, 0])

    spy = Spy()
    batches = LabelledBatches(x, y, size=400, augment=True)
    loss = batches.loss(spy, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    shown = spy.seen[0]
    assert torch.isfinite(loss)
    assert set(shown.tolist()) <= {*range(9), 40}  # never an unlabelled sample
    assert 0.4 < (shown == 40).float().mean() < 0.6  # the lone lesion label: half the draws


def test_dihedral_gives_the_eight_symmetries_of_the_square() -> None:
    image = torch.arange(9.0).view(1, 1, 3, 3)
    turned = dihedral(image.expand(8, 1, 3, 3), torch.arange(8))
    assert torch.equal(turned[0], image[0])  # element 0 is the identity
    assert len({tuple(t.flatten().tolist()) for t in turned}) == 8
    assert torch.equal(turned[1, 0], torch.rot90(image[0, 0], 1))
    assert torch.equal(turned[4, 0], torch.flip(image[0, 0], dims=(1,)))


def test_pooled_classifier_sees_the_convolution_maps_and_the_latent() -> None:
    config = VAEConfig(
        architecture="conv",
        input_shape=(1, 12, 12),
        conv_channels=[4, 6],
        hidden_dims=[16],
        latent_dim=3,
        classifier_classes=2,
        classifier_input="pooled",
    )
    model = build_model(config)
    assert model.classifier.in_features == 3 + 2 * 6
    x = torch.rand(5, 1, 12, 12)
    assert model(x, sample=False).class_logits is None  # training, no labels: not needed
    out = model.eval()(x, sample=False)
    assert out.class_logits is not None and torch.equal(out.class_logits, model.classify(x))
    # the encoder's convolutions, pooled over positions: "a bright spot anywhere" is one filter
    maps = model.encoder(x)  # the convolutions
    mu = model.encode(x)[0]
    features = model.classifier_features(model.encoder_outputs(x))
    assert torch.allclose(features[:, :6], maps.amax(dim=(2, 3)))
    assert torch.allclose(features[:, 6:12], maps.mean(dim=(2, 3)))
    assert torch.equal(features[:, 12:], mu)
    with pytest.raises(ValueError, match="needs architecture 'conv'"):
        VAEConfig(classifier_classes=2, classifier_input="pooled")


def test_labelled_batches_of_oblong_images_keep_their_shape() -> None:
    x = torch.rand(6, 1, 8, 6)
    y = torch.tensor([0, 1, -1, -1, 0, 1])
    config = VAEConfig(input_shape=(1, 8, 6), hidden_dims=[8], classifier_classes=2)
    loss = LabelledBatches(x, y, size=64, augment=True).loss(
        build_model(config), torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(loss)
