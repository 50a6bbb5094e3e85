"""Analysis of latent spaces: clustering metrics, projections."""
