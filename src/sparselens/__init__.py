"""sparselens: sparse dictionaries for opening neural networks up."""

__version__ = "0.1.0"
