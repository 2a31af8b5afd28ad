"""Data layer: interaction logs, readers, encoders, splits, samplers, synthetic data."""

from recforge.data.interactions import Interactions
from recforge.data.vocab import IdVocab

__all__ = ["IdVocab", "Interactions"]
