"""The tiny random SigLIP checkpoint the image tests use (built by `wardround.tiny_models`)."""

from wardround.tiny_models import (
    TINY_DIM,
    TINY_IMAGE_SIZE,
    TINY_TEXT_TOKENS,
    WORDS,
    make_tiny_siglip,
)

__all__ = ["TINY_DIM", "TINY_IMAGE_SIZE", "TINY_TEXT_TOKENS", "WORDS", "make_tiny_siglip"]
