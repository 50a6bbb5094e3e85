"""Embedding tables on disk: Parquet (with what the table was made from) or CSV.

Torch-free, so the analysis and the report read embeddings without the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from patchvae.artefacts import EMBEDDING_FORMAT, EmbeddingInfo
from patchvae.errors import ConfigError, DataError
from patchvae.io import atomic_path

EMBEDDING_HEAD = ("case_id", "slice", "row", "col")
_META_KEY = b"patchvae"


def is_embedding_table(path: str | Path) -> bool:
    """Whether ``path`` is an embedding table ``patchvae embed`` wrote (by its columns)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            with path.open(encoding="utf-8") as handle:
                names = handle.readline().strip().split(",")
    except Exception:  # unreadable, binary, no pyarrow: not recognisably ours
        return False
    return _has_embedding_columns(names)


def _has_embedding_columns(names: list[str]) -> bool:
    return tuple(names[:4]) == EMBEDDING_HEAD and "mu_0" in names and "neg_elbo" in names


def check_table_name(out: str | Path) -> Path:
    """An embedding table is written as ``.csv`` or ``.parquet``; anything else is refused."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"out: expected a .csv or .parquet file name, got {out.name!r}")
    return out


def write_table(frame: pd.DataFrame, out: str | Path, info: EmbeddingInfo | None = None) -> Path:
    """Write ``frame`` as Parquet (``.parquet``) or CSV, atomically. Parquet also keeps
    ``info`` (what the table was made from) in its metadata; CSV has no place for it."""
    out = check_table_name(out)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if info is not None:
                meta = dict(table.schema.metadata or {})
                meta[_META_KEY] = info.model_dump_json().encode("utf-8")
                table = table.replace_schema_metadata(meta)
            pq.write_table(table, tmp)
        else:
            frame.to_csv(tmp, index=False)
    return out


def read_embedding_info(path: str | Path) -> EmbeddingInfo:
    """What a Parquet embedding table was made from, read from its schema alone (the table
    itself, which may be large, is not read); anything else is a one-line
    :class:`DataError`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "embedding table not found")
    try:
        schema = pq.read_schema(path)
        raw = (schema.metadata or {}).get(_META_KEY)
        info = EmbeddingInfo.model_validate(json.loads(raw)) if raw else None
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise DataError(
            path, f"embedding table is damaged ({type(exc).__name__}); embed again"
        ) from None
    if info is None or info.format != EMBEDDING_FORMAT or not _has_embedding_columns(schema.names):
        raise DataError(
            path,
            f"not an embedding table of this patchvae (expected {EMBEDDING_FORMAT}); embed again",
        )
    return info


def read_embedding(path: str | Path) -> tuple[pd.DataFrame, EmbeddingInfo]:
    """An embedding table written by ``patchvae embed`` as Parquet, and what it was made
    from; anything else is a one-line :class:`DataError`."""
    import pyarrow.parquet as pq

    info = read_embedding_info(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise DataError(
            path, f"embedding table is damaged ({type(exc).__name__}); embed again"
        ) from None
    return table.to_pandas(), info


def latent_columns(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """The ``mu_*`` or ``logvar_*`` columns of an embedding table, in dimension order,
    (N, latent_dim).

    Example
    -------
    >>> latent_columns(pd.DataFrame({"mu_1": [2.0], "mu_0": [1.0], "kl": [0.0]}), "mu").tolist()
    [[1.0, 2.0]]
    """
    columns = [c for c in frame.columns if c.startswith(f"{kind}_")]
    return frame[sorted(columns, key=lambda c: int(c.split("_")[1]))].to_numpy()
