"""The trainer's data: one order whether samples are in memory or streamed from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patchvae.batches import batch_indices
from patchvae.config import TrainConfig
from patchvae.feed import BLOCK, ArrayRows, StoreRows, epoch_windows, stream_windows
from patchvae.models import VAEConfig
from patchvae.store import PatchStore
from patchvae.train import fit


def test_a_set_within_the_window_is_shuffled_as_before() -> None:
    """Up to ``shuffle_window`` samples, the order is the permutation the trainer always drew
    (so earlier runs, the demo and the docs tables keep their numbers)."""
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    (window,) = epoch_windows(1000, 100, 1000, a)
    before = torch.cat(batch_indices(1000, 100, b)).numpy()
    assert np.array_equal(window, before)


def test_windows_cover_every_sample_once_in_blocks() -> None:
    n, batch = 10_000, 100
    windows = epoch_windows(n, batch, 1024, torch.Generator().manual_seed(0))
    order = np.concatenate(windows)
    assert np.array_equal(np.sort(order), np.arange(n))
    assert all(w.size % batch == 0 for w in windows[:-1]) and windows[0].size == 1000
    # each window draws on few blocks (what streaming reads), not on the whole set
    assert max(np.unique(w // BLOCK).size for w in windows) <= 1000 // BLOCK + 2
    # and the order is shuffled within a window, not left in blocks
    assert (np.diff(windows[0]) == 1).mean() < 0.05


def test_store_rows_read_what_the_store_holds(two_case_store: Path) -> None:
    store = PatchStore(two_case_store)
    rows = np.flatnonzero(np.arange(store.n_patches) % 3 != 1)  # runs with gaps
    streamed = StoreRows(two_case_store, rows, store.input_shape)
    index = np.random.default_rng(0).integers(0, rows.size, 300)  # any order, repeats
    assert np.array_equal(streamed.read(index), store.patches(rows[index]))
    chunks = np.concatenate(list(streamed.chunks(64)))
    assert np.array_equal(chunks, store.patches(rows))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_windows_in_order_whatever_the_workers(two_case_store: Path, workers: int) -> None:
    store = PatchStore(two_case_store)
    rows = StoreRows(two_case_store, np.arange(store.n_patches), store.input_shape)
    windows = epoch_windows(rows.n, 10, 64, torch.Generator().manual_seed(1))
    got = list(stream_windows(rows, windows, workers, pin=False))
    assert [p[o].numpy().tolist() for _, p, o in got] == [w.tolist() for w in windows]
    for (samples, _, order), window in zip(got, windows, strict=True):
        assert torch.equal(samples[order], torch.from_numpy(store.patches(window)))


def test_streamed_training_equals_training_in_memory(two_case_store: Path) -> None:
    """Same seed, same numbers: in memory, streamed, streamed by two workers."""
    store = PatchStore(two_case_store)
    rows = np.arange(store.n_patches)
    config = VAEConfig(input_shape=store.input_shape, hidden_dims=[32], latent_dim=2)
    train = TrainConfig(epochs=2, batch_size=32, shuffle_window=128, seed=4)
    streamed = StoreRows(two_case_store, rows, store.input_shape)
    in_memory = ArrayRows(streamed.read(rows))
    histories = []
    for x, workers in ((in_memory, 0), (streamed, 0), (streamed, 2)):
        result = fit(
            config,
            train.model_copy(update={"loader_workers": workers}),
            x,
            x,
            progress=False,
        )
        histories.append([{k: v for k, v in h.items() if k != "seconds"} for h in result.history])
    assert histories[0] == histories[1] == histories[2]
    assert store.n_patches > train.shuffle_window  # the windowed order was exercised


@pytest.mark.parametrize("variant", ["semi-supervised", "mixture prior"])
def test_streamed_equals_in_memory_for_labels_and_the_mixture_prior(
    two_case_store: Path, variant: str
) -> None:
    """The labelled batches and the mixture prior's start read the streamed store too."""
    store = PatchStore(two_case_store)
    rows = np.arange(store.n_patches)
    semi = variant == "semi-supervised"
    config = VAEConfig(
        input_shape=store.input_shape,
        hidden_dims=[32],
        latent_dim=2,
        classifier_classes=2 if semi else 0,
        prior="gaussian" if semi else "gmm",
    )
    train = TrainConfig(
        epochs=2, batch_size=32, shuffle_window=128, gmm_init_epochs=0 if semi else 1
    )
    labels = torch.from_numpy(store.table().label.to_numpy().astype(np.int64)) if semi else None
    streamed = StoreRows(two_case_store, rows, store.input_shape)
    histories = []
    for x in (ArrayRows(streamed.read(rows)), streamed):
        result = fit(config, train, x, x, progress=False, y_train=labels)
        histories.append([{k: v for k, v in h.items() if k != "seconds"} for h in result.history])
    assert histories[0] == histories[1]
    if not semi:
        assert "prior_init_bic" in histories[1][0]
