"""vitlens' version: the one source (pyproject reads it; cache keys, manifests and Results carry it).
A leaf, as timm's `version.py`: it imports nothing, so every layer may read it."""
__version__ = "0.1.0"
