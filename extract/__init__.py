"""Feature extraction: decoding, sampling, backbones, sharded HDF5 and the Ray engine (``vqa-extract``)."""
