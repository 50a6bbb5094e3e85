"""Every patch score, from an embedding's columns, the patches and the training reference:
one function for the analysis stage and the scoring stage, so a score means the same in
``analyze`` and in ``score``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patchvae.analysis.anomaly import (
    adjacent_patches,
    aggregate_posterior_nll,
    count_bright_spots,
    equalise_by_case,
    fit_gaussian,
    fuse_by_rank,
    in_context,
    intensity_baseline,
    mahalanobis,
    surrounding_patches,
)
from patchvae.analysis.fewlabel import (
    WeakScore,
    fit_weak_score,
    patch_descriptors,
)
from patchvae.artefacts import TrainingRecord
from patchvae.errors import ConfigError, DataError
from patchvae.splits import draw_labelled, read_patch_labels
from patchvae.store import PatchStore, file_sha256
from patchvae.tables import latent_columns

BASELINE = "intensity_p95"
EQUALISED = "intensity_histeq"
SPOTS = "intensity_spots"
SPOTS_CONTEXT = "intensity_spots_context"
ELBO_SCORES = ("recon_error", "kl", "neg_elbo")
LABEL_FREE = "fused_label_free"
WEAK = "p_lesion_weak"
WEAK_CONTEXT = "p_lesion_weak_context"
# training patches that Dice thresholds, fusion weights and the weak score are fitted on
THRESHOLD_PATCHES = 20000


def own_score(architecture: str, classifier: bool = False) -> str:
    """The score a model is read by, fixed in advance (the one its recipe names): a model
    with a lesion classifier's probability, a denoising autoencoder's local residual
    (Kascenas et al. 2022), any other VAE's negative ELBO (its own bound on how unlikely the
    patch is). A run with weak labels is read by its weakly supervised score, which
    :func:`add_weak_score` adds after these."""
    if classifier:
        return "p_lesion"
    return "residual_p95" if architecture == "dae" else "neg_elbo"


def label_free_base(scores: dict[str, np.ndarray]) -> str:
    """The score with no learning that the label-free fusion takes beside the model's: the
    bright-spot count in context where the patches' places are known, else the intensity
    baseline. Fixed in the code, not chosen per run: on the training patches of the three dev
    sets it made the better fusion for every recipe (docs/models.md); until 2026-11-27 the
    fusion took the intensity baseline."""
    return SPOTS_CONTEXT if SPOTS_CONTEXT in scores else BASELINE


def at_most(n: int, cap: int, seed: int) -> np.ndarray:
    """Row numbers: all ``n``, or, above ``cap``, a sorted sample of ``cap`` drawn with
    ``seed``."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


@dataclass
class Reference:
    """What the latent scores compare a patch with: the training patches' posteriors and a
    Gaussian fitted to their latent means."""

    mu: np.ndarray
    logvar: np.ndarray
    gaussian: tuple[np.ndarray, np.ndarray]
    seed: int


def training_reference(seen: pd.DataFrame, seed: int) -> Reference:
    """The reference of a run: the embedding rows of its training patches (``seen``: those
    seen in training), without the lesion patches a healthy-only run left out
    (``trained_on``), their posteriors and a Gaussian fitted to their latent means."""
    trained = seen[seen.trained_on.to_numpy()] if "trained_on" in seen else seen
    mu = latent_columns(trained, "mu")
    return Reference(mu, latent_columns(trained, "logvar"), fit_gaussian(mu, seed), seed)


def surroundings(table: pd.DataFrame, size: int) -> np.ndarray | None:
    """The 26 patches around each of ``table``'s (:func:`surrounding_patches`, for patches of
    ``size`` pixels), or None where the table does not say where its patches lie."""
    if not {"slice", "row", "col"} <= set(table.columns):
        return None
    cases = table.case_id.to_numpy()
    slices, rows, cols = (table[c].to_numpy() for c in ("slice", "row", "col"))
    return surrounding_patches(cases, slices, rows, cols, size=size)


def patch_scores(
    table: pd.DataFrame,
    mu: np.ndarray,
    reference: Reference | None,
    patches: np.ndarray,
    brain: np.ndarray,
    own: str | None = None,
    weak: WeakScore | None = None,
) -> dict[str, np.ndarray]:
    """Every patch score: the ELBO terms and the local residual (columns of ``table``, an
    embedding's), the latent density under the training patches' aggregate posterior and the
    Mahalanobis distance of the latent mean (without a ``reference``: neither), the feature
    Mahalanobis distance and the classifier's probability (where ``table`` has them), and the
    scores with no learning (the intensity baseline, plain and histogram-equalised per case,
    and the bright-spot count, confirmed in the adjacent slices where ``table`` has the
    patches' slice, row and col, and there also read in context: with the largest count
    around it, ``intensity_spots_context``); with ``own``, the model's own score
    (:func:`own_score`), the label-free fusion of the two: the mean of the percentile ranks
    of the strongest score with no learning (:func:`label_free_base`) and of the model's
    score among the patches given, with equal weights and no label anywhere
    (``fused_label_free``); with ``weak`` (a run's weakly supervised score, fitted on its
    training patches), that score too (:func:`add_weak_score`)."""
    found = scores_and_features(table, mu, reference, patches, brain, own, weak is not None)
    if weak is not None:
        assert found.features is not None
        add_weak_score(found.scores, found.features, weak, found.around)
    return found.scores


@dataclass
class Scored:
    """A table's patch scores, the weak score's features (None where not asked for) and the
    26 patches around each (None where the table does not say where its patches lie)."""

    scores: dict[str, np.ndarray]
    features: np.ndarray | None
    around: np.ndarray | None


def scores_and_features(
    table: pd.DataFrame,
    mu: np.ndarray,
    reference: Reference | None,
    patches: np.ndarray,
    brain: np.ndarray,
    own: str | None,
    features: bool,
) -> Scored:
    """:func:`patch_scores` without a weak score, and with ``features``, what a weak score
    reads of each patch (:func:`weak_features`; ``own`` its partner): both from one
    equalisation of the patches and one search for their neighbours."""
    scores = {name: table[name].to_numpy() for name in ELBO_SCORES}
    if "residual_p95" in table:  # embeddings made by patchvae 0.3 and later
        scores["residual_p95"] = table["residual_p95"].to_numpy()
    if reference is not None:
        scores["latent_nll"] = aggregate_posterior_nll(
            mu, reference.mu, reference.logvar, reference.seed
        )
        scores["latent_mahalanobis"] = mahalanobis(mu, *reference.gaussian)
    if "feature_mahalanobis" in table:  # made by the embedding stage, which has the model
        scores["feature_mahalanobis"] = table["feature_mahalanobis"].to_numpy()
    if "p_lesion" in table:
        scores["p_lesion"] = table["p_lesion"].to_numpy()  # semi-supervised classifier
    scores[BASELINE] = intensity_baseline(patches)
    # one equalisation for all (volume-sized for a densely scored case)
    equalised = equalise_by_case(patches, brain, table.case_id.astype(str).to_numpy())
    scores[EQUALISED] = intensity_baseline(equalised)  # histogram_equalised_baseline
    # confirmed in the adjacent slices, and read in context, where the table says where
    # the patches lie
    around = surroundings(table, patches.shape[-1])
    if around is not None:
        cases = table.case_id.to_numpy()
        slices, rows, cols = (table[c].to_numpy() for c in ("slice", "row", "col"))
        adjacent = adjacent_patches(cases, slices, rows, cols)
        scores[SPOTS] = count_bright_spots(equalised, brain, adjacent=adjacent)
        scores[SPOTS_CONTEXT] = in_context(scores[SPOTS], around)
    else:
        scores[SPOTS] = count_bright_spots(equalised, brain)
    if own is not None and own in scores:
        scores[LABEL_FREE] = fuse_by_rank(scores[label_free_base(scores)], scores[own], 0.5)
    read = None
    if features:
        if own is None:
            raise ValueError("the weak score's features need the model's own score (own)")
        read = weak_features(table, mu, equalised, brain, scores, own)
    del equalised
    return Scored(scores, read, around)


def weak_features(
    table: pd.DataFrame,
    mu: np.ndarray,
    equalised: np.ndarray,
    brain: np.ndarray,
    scores: dict[str, np.ndarray],
    partner: str,
) -> np.ndarray:
    """What the weakly supervised score reads of each patch: its equalised intensities'
    percentiles and brain fraction (:func:`patch_descriptors`; ``equalised``: the patches
    after :func:`equalise_by_case`), the percentile ranks among the patches given of the
    score with no learning (:func:`label_free_base`) and of the model's unsupervised score
    ``partner``, its latent mean and its KL."""
    from scipy.stats import rankdata

    n = max(len(table), 1)
    return np.column_stack(
        [
            patch_descriptors(equalised, brain),
            rankdata(scores[label_free_base(scores)]) / n,
            rankdata(scores[partner]) / n,
            mu,
            table["kl"].to_numpy(),
        ]
    )


def add_weak_score(
    scores: dict[str, np.ndarray],
    features: np.ndarray,
    weak: WeakScore,
    around: np.ndarray | None,
) -> None:
    """Add the weakly supervised score, and make it the label-free fusion's partner (it is
    the run's own score): ``fused_label_free`` becomes the count in context + ``p_lesion_weak``
    with equal rank weights. Where the patches' places are known (``around``:
    :func:`surroundings`), add it read in context too (:func:`in_context`, as the bright-spot
    count is: ``p_lesion_weak_context``), a score beside the others that the recipe does not
    read (docs/models.md, "The weak score read in context")."""
    scores[WEAK] = weak(features)
    if around is not None:
        scores[WEAK_CONTEXT] = in_context(scores[WEAK], around)
    scores[LABEL_FREE] = fuse_by_rank(scores[label_free_base(scores)], scores[WEAK], 0.5)


def recorded_patch_labels(record: TrainingRecord, store: PatchStore) -> np.ndarray | None:
    """The user's patch labels a run trained with (``patch_labels``), one per row of its
    training ``store`` (-1 where none), read from the file its training record names and
    refused where that file is gone or has changed since; None for a run without one."""
    ref = record.patch_labels
    if ref is None:
        return None
    path = Path(ref.path)
    if not path.is_file():
        raise DataError(
            path, "the run's patch labels (patch_labels) are gone; the weak score is fitted to them"
        )
    if file_sha256(path) != ref.sha256:
        raise DataError(
            path,
            "changed since the run trained (SHA-256 differs); train a new run with the new labels",
        )
    return read_patch_labels(path, store.table())


@dataclass
class TrainingScores:
    """The scores of (up to ``THRESHOLD_PATCHES`` of) a run's training patches: the store's
    rows of those patches, their labels and brain masks, every score, and a run's weakly
    supervised score fitted on them (None without weak labels)."""

    rows: np.ndarray
    labels: np.ndarray
    brain: np.ndarray
    scores: dict[str, np.ndarray]
    weak: WeakScore | None


def training_scores(
    seen: pd.DataFrame,
    reference: Reference,
    store: PatchStore,
    architecture: str,
    classifier: bool,
    weak_labels: int | None,
    seed: int,
    given: np.ndarray | None = None,
) -> TrainingScores:
    """Every score of the training patches (``seen``: their rows of the run's embedding of
    its training ``store``; above ``THRESHOLD_PATCHES`` of them, a sample drawn with the
    reference's seed), and, for a run with ``weak_labels``, the weakly supervised score
    fitted on them: ``weak_labels`` of their labels drawn with the run's ``seed``
    (:func:`draw_labelled`, as a classifier's are), and pseudo-labels from the label-free
    fusion of the count in context and the model's negative ELBO (or local residual). With
    ``given`` (the user's patch labels, one per row of the store: ``read_patch_labels``),
    those labels instead, their patches always among the patches fitted on."""
    pick = at_most(len(seen), THRESHOLD_PATCHES, reference.seed)
    if given is not None and weak_labels:
        pick = np.union1d(pick, np.flatnonzero(given[seen.index.to_numpy()] >= 0))
    sub = seen.iloc[pick]
    rows = sub.index.to_numpy()  # the embedding's rows are the store's
    table = sub.reset_index(drop=True)
    labels = table.label.to_numpy()
    patches, brain = store.patches(rows), store.masks("brain", rows)
    mu = latent_columns(table, "mu")
    unsupervised = own_score(architecture, classifier)
    found = scores_and_features(
        table, mu, reference, patches, brain, unsupervised, bool(weak_labels)
    )
    weak = None
    if weak_labels:
        assert found.features is not None
        kept = draw_labelled(labels, weak_labels, seed) if given is None else given[rows]
        if not (kept >= 0).any():
            raise ConfigError("weak_labels: no training patch has a label (no lesion masks?)")
        weak = fit_weak_score(found.features, found.scores[LABEL_FREE], kept)
        add_weak_score(found.scores, found.features, weak, found.around)
    return TrainingScores(rows, labels, brain, found.scores, weak)
