"""Data sources: MNIST IDX files and medical-volume datasets (layouts, manifests)."""
