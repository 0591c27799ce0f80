"""Paper models, one file each, and the explicit model registry."""
