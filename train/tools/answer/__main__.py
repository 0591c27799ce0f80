"""``python -m train.tools.answer``: the ``vqa-answer`` command."""

from train.tools.answer.cli import main

main()
