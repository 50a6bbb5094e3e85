"""The VAE family's shared interface: named outputs, the loss, the prior, the classifier head.

Each architecture is a module of its own (``mlp.py``, ``conv.py``) subclassing :class:`VAE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from patchvae.config.model import VAEConfig
from patchvae.models.losses import gaussian_kl, gmm_prior_terms, reconstruction_loss

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


@dataclass
class VAEOutput:
    """Named outputs of a forward pass. Per-sample terms have shape (batch,)."""

    logits: torch.Tensor  # the decoder's, same shape as the input
    z: torch.Tensor  # the latent sample that was decoded
    mu: torch.Tensor
    logvar: torch.Tensor
    recon: torch.Tensor  # per sample reconstruction loss, summed over pixels
    kl: torch.Tensor  # per sample KL to the prior, summed over latent dimensions (before beta)
    loss: torch.Tensor  # scalar: mean over the batch of recon + beta * kl (+ labels)
    # semi-supervised models, given labels or in eval mode: the classifier's logits
    class_logits: torch.Tensor | None = None
    class_loss: torch.Tensor | None = None  # per sample cross-entropy, 0 where unlabelled
    hidden: torch.Tensor | None = None  # the encoder's features (``Encoded.hidden``)
    # a fitted mixture prior: p(component | z), (batch, components)
    responsibilities: torch.Tensor | None = None

    @property
    def recon_x(self) -> torch.Tensor:
        """The decoded images in [0, 1] (the sigmoid of the logits), made when asked: a
        training step never needs them."""
        return torch.sigmoid(self.logits)


@dataclass
class Encoded:
    """What the encoder gives: the posterior's parameters, each (batch, latent_dim), and the
    feature maps of its last convolution (batch, C, h, w) where it has convolutions."""

    mu: torch.Tensor
    logvar: torch.Tensor
    maps: torch.Tensor | None = None
    # the last dense layer before (mu, logvar): the encoder's features of the patch
    hidden: torch.Tensor | None = None


class VAE(nn.Module):
    """Base class: subclasses define ``encoder_outputs`` and ``decode_logits``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        if config.prior == "gmm":
            k, d = config.clusters, config.latent_dim
            self.prior_logits = nn.Parameter(torch.zeros(k))
            self.prior_mu = nn.Parameter(torch.randn(k, d))  # the run's seed fixes it
            self.prior_logvar = nn.Parameter(torch.zeros(k, d))
            # 0 while the mixture is not yet fitted (pretraining under N(0, I)): the KL term is
            # then the Gaussian one; a checkpoint without it had its mixture from the start
            self.register_buffer("mixture_active", torch.ones(()))
            self._mixture_on = True  # the buffer's value, read without a device sync
            self._register_load_state_dict_pre_hook(self._read_mixture_flag)
        if config.classifier_classes:
            self.classifier = nn.Linear(config.classifier_input_dim, config.classifier_classes)

    def regularizer(
        self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The per-sample KL term of the prior, and the cluster responsibilities (gmm prior)."""
        if self.config.prior == "gmm" and self.mixture_ready:
            return gmm_prior_terms(
                z, mu, logvar, self.prior_logits, self.prior_mu, self.prior_logvar
            )
        return gaussian_kl(mu, logvar), None

    @property
    def mixture_ready(self) -> bool:
        """Whether the mixture prior is in use (False while it waits for its first fit)."""
        return self.config.prior == "gmm" and self._mixture_on

    @torch.no_grad()
    def use_mixture(self, on: bool) -> None:
        """Switch the mixture prior on (once fitted) or off (pretraining under N(0, I))."""
        flag: torch.Tensor = self.mixture_active  # type: ignore[assignment]
        flag.fill_(float(on))
        self._mixture_on = on

    def _read_mixture_flag(
        self, state: dict[str, torch.Tensor], prefix: str, *args: object
    ) -> None:
        key = prefix + "mixture_active"
        state.setdefault(key, torch.ones(()))  # older checkpoints: the mixture was always on
        self._mixture_on = bool(state[key])

    @torch.no_grad()
    def cluster_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(cluster | posterior mean) under the mixture prior, (batch, n_clusters)."""
        if self.config.prior != "gmm":
            raise ValueError("cluster_probabilities needs a model with prior='gmm'")
        if not self.mixture_ready:
            raise ValueError("the mixture prior was never fitted (training stopped before it)")
        mu, logvar = self.encode(x)
        gamma = self.regularizer(mu, mu, logvar)[1]
        assert gamma is not None
        return gamma

    def encoder_outputs(self, x: torch.Tensor) -> Encoded:
        """Posterior parameters (and feature maps) of a batch (batch, *input_shape)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, logvar), each (batch, latent_dim)."""
        encoded = self.encoder_outputs(x)
        return encoded.mu, encoded.logvar

    def classifier_features(self, encoded: Encoded) -> torch.Tensor:
        """What the semi-supervised classifier sees (``config.classifier_input``): the latent
        mean, or the encoder's last feature maps max- and mean-pooled over positions (a bright
        spot anywhere in the patch is one filter away) followed by the latent mean."""
        if self.config.classifier_input != "pooled":
            return encoded.mu
        if encoded.maps is None:
            raise ValueError("classifier_input 'pooled' needs an encoder with feature maps")
        maps = encoded.maps
        return torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3)), encoded.mu], dim=1)

    def classify(self, x: torch.Tensor, encoded: Encoded | None = None) -> torch.Tensor:
        """Class logits of the semi-supervised classifier, (batch, classifier_classes);
        ``encoded``, when already computed, spares a second pass through the encoder."""
        if encoded is None:
            encoded = self.encoder_outputs(x)
        return self.classifier(self.classifier_features(encoded))

    def draw_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The random numbers a sampled pass of ``x`` uses, drawn as :meth:`forward` draws
        them in float32: eps, (batch, latent_dim)."""
        shape = (x.shape[0], self.config.latent_dim)
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits, shape (batch, *input_shape)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1], shape (batch, *input_shape)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        sample: bool = True,
        beta: float | torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Encode, draw z = mu + sigma * eps with eps ~ N(0, I) (or z = mu), decode, score.

        ``beta`` overrides the config's KL weight for this pass (KL warm-up). ``labels``
        (batch,) with -1 for unlabelled samples add the classifier's cross-entropy on the
        labelled ones (semi-supervised models). ``noise``: the eps to use, drawn beforehand
        by :meth:`draw_noise` (a compiled step draws outside its graph), instead of drawing
        it here from ``generator``."""
        encoded = self.encoder_outputs(x)
        mu, logvar = encoded.mu, encoded.logvar
        if sample:
            eps = noise
            if eps is None:
                eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        logits = self.decode_logits(z)
        recon = reconstruction_loss(logits, x, self.config.reconstruction_loss)
        kl, responsibilities = self.regularizer(z, mu, logvar)
        weight = self.config.beta if beta is None else beta
        per_sample = recon + weight * kl
        class_logits = class_loss = None
        # training without labels (the trainer then feeds the classifier its own labelled
        # batches) skips the classifier
        if self.config.classifier_classes and (labels is not None or not self.training):
            class_logits = self.classify(x, encoded)
            if labels is not None:
                known = labels >= 0
                class_loss = torch.zeros_like(recon)
                if known.any():
                    class_loss = class_loss.masked_scatter(
                        known, F.cross_entropy(class_logits[known], labels[known], reduction="none")
                    )
                per_sample = per_sample + self.config.classifier_weight * class_loss
        return VAEOutput(
            logits=logits,
            z=z,
            mu=mu,
            logvar=logvar,
            recon=recon,
            kl=kl,
            loss=per_sample.mean(),
            class_logits=class_logits,
            class_loss=class_loss,
            hidden=encoded.hidden,
            responsibilities=responsibilities,
        )
