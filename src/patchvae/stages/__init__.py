"""The stages of the patch pipeline after extraction, one module each, one entry point each.

Each reads the previous stage's artefact from disk and writes its own:

- :mod:`~patchvae.stages.training`: a patch store -> a run folder (``checkpoint.pt``,
  ``training.json``), :func:`~patchvae.stages.training.train_on_store`;
- :mod:`~patchvae.stages.embedding`: a run's checkpoint + a store -> an embedding table
  (``embedding-<store>.parquet``, with what it was made from),
  :func:`~patchvae.stages.embedding.embed_to_table`;
- :mod:`~patchvae.stages.analysis`: embeddings + the store -> ``analysis-<store>/``
  (``analysis.json``, ``figure-data.npz``), :func:`~patchvae.stages.analysis.analyze_embeddings`.

The report (:mod:`patchvae.report`) then draws every figure from these artefacts alone.
"""
