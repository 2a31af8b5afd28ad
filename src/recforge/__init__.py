"""recforge: interaction logs in, recommendations out."""

__version__ = "0.1.0"
