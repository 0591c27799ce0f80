"""``python -m extract.cli``: the same as ``vqa-extract``."""

from extract.cli import main

main()
