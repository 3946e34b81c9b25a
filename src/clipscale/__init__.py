"""clipscale: reproducible scaling laws for contrastive language-image learning, as a pipeline."""

__version__ = "0.1.0"
