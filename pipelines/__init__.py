"""Data in: dataset adapters, annotation parsing, the text pipeline and the demo dataset generator.

This package is the base layer: ``extract`` and ``train`` import from it, never the reverse.
"""
