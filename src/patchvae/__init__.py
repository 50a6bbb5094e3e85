"""patchvae: variational autoencoders for unlabelled medical image patches."""

from patchvae.errors import ConfigError, DataError, PatchvaeError, RunDirError

__version__ = "0.2.0"

__all__ = ["ConfigError", "DataError", "PatchvaeError", "RunDirError", "__version__"]
