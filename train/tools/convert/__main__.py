"""``python -m train.tools.convert``: the ``vqa-convert`` command."""

from train.tools.convert import main

main()
