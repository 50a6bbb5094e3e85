"""The embedding stage, called as a library: when the run's own table is made again, kept, or
refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchvae.artefacts import embedding_path
from patchvae.errors import DataError, RunDirError
from patchvae.stages.embedding import checkpoint_record, current_embedding, embed_to_table
from patchvae.tables import read_embedding


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained run, without embeddings or analyses."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("analysis-*", "embedding-*"))
    return copy


def test_made_once_then_kept_while_current(run: Path, two_case_store: Path) -> None:
    path = current_embedding(run, two_case_store)
    assert path == embedding_path(run, two_case_store)
    frame, info = read_embedding(path)
    assert info.checkpoint == checkpoint_record(run)
    assert info.store.path == str(two_case_store.resolve())
    assert len(frame) > 0 and {"mu_0", "logvar_0", "neg_elbo"} <= set(frame.columns)
    made = path.stat().st_mtime_ns
    assert current_embedding(run, two_case_store) == path
    assert path.stat().st_mtime_ns == made  # current: not embedded again


def test_made_again_after_the_checkpoint_changed(run: Path, two_case_store: Path) -> None:
    from patchvae.checkpoint import load_checkpoint, save_checkpoint

    path = current_embedding(run, two_case_store)
    before = read_embedding(path)[1].checkpoint.sha256
    payload = load_checkpoint(run / "checkpoint.pt")
    for tensor in payload["model_state"].values():
        tensor.add_(0.01)
    save_checkpoint(run / "checkpoint.pt", payload)
    current_embedding(run, two_case_store)
    after = read_embedding(path)[1]
    assert after.checkpoint.sha256 != before
    assert after.checkpoint == checkpoint_record(run)


def test_kept_without_checkpoint_and_refused_for_another_store(
    run: Path, two_case_store: Path, tmp_path: Path
) -> None:
    path = current_embedding(run, two_case_store)
    (run / "checkpoint.pt").unlink()
    assert current_embedding(run, two_case_store) == path  # the table is all later stages need
    other = tmp_path / "elsewhere" / two_case_store.name
    other.parent.mkdir()
    shutil.copy(two_case_store, other)
    with other.open("r+b") as handle:  # same file name, other content
        handle.seek(0, 2)
        handle.write(b"\0")
    with pytest.raises(RunDirError, match="holds the embedding of another store"):
        current_embedding(run, other)
    with pytest.raises(DataError, match=r"checkpoint\.pt: checkpoint not found"):
        embed_to_table(run, two_case_store, tmp_path / "table.parquet")
