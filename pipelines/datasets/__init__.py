"""Dataset adapters and their explicit registry."""
