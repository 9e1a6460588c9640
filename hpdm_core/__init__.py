"""hpdm: Hierarchical Patch Diffusion Models for pixel-space video generation."""

__version__ = "0.1.0"
