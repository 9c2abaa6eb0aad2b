"""The version of rnncli (pyproject.toml reads it from here; ``rnncli.__version__`` too)."""

__version__ = "0.2.0"
