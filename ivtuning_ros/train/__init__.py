"""Training: Hungarian matching, contrastive denoising queries and the set criterion."""
