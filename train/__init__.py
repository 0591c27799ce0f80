"""Training and evaluation: configs, datasets over feature shards, the shared loop (``vqa-train``)."""
