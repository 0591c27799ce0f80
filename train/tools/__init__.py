"""The tools that read a trainer's checkpoints and runs, apart from the trainer itself.

- ``answer/``: the :class:`~train.tools.answer.Answerer` API and ``vqa-answer`` (raw video in, answers out);
- ``explain.py``: what a model looked at (the figures of ``vqa-answer --explain``);
- ``report.py``, ``report_html.py``, ``templates/``: runs beside chance level
  (``python -m train.tools.report``);
- ``convert/``: ``vqa-convert``, the released MSPAN / MASN checkpoints read without pickle
  (``official_weights.py``) and converted into this toolkit's checkpoints (``mspan.py``, ``masn.py``).

The tools import the trainer's modules (checkpoints, configs, datasets, tasks); the trainer never imports
a tool.
"""
