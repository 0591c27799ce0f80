"""One training run end to end: data, model, the loop and its hooks, selection on val, test, outputs.

:func:`run` is what ``vqa-train`` calls after validating the configs; tests call it directly (also
in spawned processes for DDP). The run directory::

    RUN/
      config.yaml                 # the effective config (model, dataset, paths, train.*, model.*)
      train.log                   # the log of the main process
      text_cache/                 # prepare_qa cache (vocabularies, encoded splits)
      checkpoints/epoch-NNNN.pt   # after every epoch (the newest train.keep_checkpoints kept)
      checkpoints/best.pt         # model weights of the best validation epoch
      tensorboard/                # TensorBoard event files
      metrics.jsonl               # one JSON line per epoch (train losses, val metrics, lr, time)
      metrics.json                # at the end: val and test of the best checkpoint, its path, baselines
      predictions_test.jsonl      # qid, video_id, qtype, prediction, answer, correct / squared error
      predictions_test.csv        # the same as CSV (moment retrieval: top-5 moments, ground truth, IoUs)
      feature_cache/              # moment retrieval: the PCA projection fitted on the training split;
                                  # verified-shards.json: the feature shards whose sha256 was checked
      .vqa-train.lock             # flock held while a process trains or evaluates here
      eval-NAME/                  # --eval-only with --out set to a training run: eval_config.yaml,
                                  # metrics.json, predictions (the run's own files are never touched)

The run's provenance record (``train/provenance.py``: feature directory, its fingerprint and
provenance, random-weight flag, GloVe coverage) goes into config.yaml, every checkpoint, metrics.json
and train.log; ``--resume`` and ``--eval-only`` on other features are refused unless
``allow_feature_change``.

One module per part: ``spec.py`` (:class:`RunSpec`, the keys a resume or an evaluation may change, the
device, seeds, optimiser and schedule), ``steps.py`` (the run as named steps: ``open_run``, ``prepare``,
``build``, ``fit`` with ``build_hooks``, ``evaluate``, ``write``), ``data.py`` (loaders, recorded feature
statistics), ``checks.py`` (resume and evaluation checks, a converted release's official text) and
``outputs.py`` (``train.log``, ``config.yaml``). What differs between task kinds (text, datasets,
batches, loss, baselines, prediction files) is asked of the kind (``train/tasks/``).
"""

from train.runner.spec import (
    EVAL_RUNTIME_KEYS,
    RESUMABLE_KEYS,
    RunInUseError,
    RunSpec,
    build_optimizer,
    build_scheduler,
    effective_config,
    eval_out_dir,
    eval_train_config,
    fill_from_features,
    resolve_device,
    seed_everything,
)
from train.runner.steps import run

__all__ = [
    "EVAL_RUNTIME_KEYS",
    "RESUMABLE_KEYS",
    "RunInUseError",
    "RunSpec",
    "build_optimizer",
    "build_scheduler",
    "effective_config",
    "eval_out_dir",
    "eval_train_config",
    "fill_from_features",
    "resolve_device",
    "run",
    "seed_everything",
]
