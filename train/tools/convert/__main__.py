"""``python -m train.tools.convert``: the same as ``vqa-convert``."""

from train.tools.convert import main

if __name__ == "__main__":
    main()
