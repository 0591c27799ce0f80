"""``python -m train.answer``: the ``vqa-answer`` command."""

from train.answer.cli import main

main()
