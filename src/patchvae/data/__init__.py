"""Data sources: MNIST IDX files (and, later, medical volumes)."""
