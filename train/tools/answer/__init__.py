"""Ask a trained model about any video: load a self-contained checkpoint once, answer many questions.

::

    from train.tools.answer import Answerer
    answerer = Answerer.from_checkpoint("RUN/checkpoints/best.pt")        # random-weight features: as is
    answerer = Answerer.from_checkpoint("best.pt", checkpoint_dir="weights/")  # pretrained backbones
    result = answerer.answer("clip.mp4", "what is the man riding ?")
    result.to_json()  # {"video", "question", "answers": [{"answer", "score"}, ...]} best first

A checkpoint written by ``vqa-train`` carries everything used here (``train.provenance``): the model
name and config, the task type, both vocabularies, the feature-normalisation statistics, the training
config and the feature set's provenance (name, resolved options, backbones with their weights sha256 or
``"random"``). The video goes through the extraction code path (``extract.featuresets``: the same
``decode`` -> ``infer`` -> ``finalize`` as ``vqa-extract``) with exactly those options and backbones;
pretrained backbone weights come from ``--backbone NAME=PATH``, ``--checkpoint-dir`` (by the recorded
file name) or the torch cache, and a file whose sha256 differs from the recorded one is refused.
Random-weight backbones are rebuilt from the recorded seed, so features, and answers, are reproduced.

The checkpoint's task kind (``train.tasks``, by its ``task_type``) builds the batch and reads and
formats the answer: :meth:`~train.tasks.TaskKind.answer_view` (what the run's meta says about reading
a question and its video), :meth:`~train.tasks.TaskKind.new_item` (one item, made by the same function
as the kind's training dataset makes its items), ``decode_answer``, ``answer_json`` and
``answer_table``. Question answering: question tokens and features standardised with the recorded
statistics (``train.data.qa_item`` and ``model_features``, as ``QADataset``; ``QACollate``), from the
feature keys of the model's registry entry.

Moment-retrieval models (CMIN) take a query instead of a question (:meth:`Answerer.answer` with the
sentence, ``--query`` on the command line). The clips go through the checkpoint's standardisation, PCA
projection and resampling (``train.moments.model_view``; the item ``train.moments.moment_item``, as the
training run's ``MomentDataset``); the query's dependency edges come from the parser the training
queries were parsed with (``meta["query_parse"]``, ``pipelines.deps.new_query_parser``: the chain or
spaCy exactly; a run on the datasets' stored parses, which cannot be made for a new sentence, falls
back as ``pipelines.deps`` does and :attr:`Answerer.query_note` says so); the top moments are decoded
by ``train.tasks.moment_losses.moment_predictions`` with the run's NMS threshold, in seconds of the
video's decoded duration (frames / fps).

Every model returns its attention as named entries of its output dict; :attr:`Answer.attention` keeps
all of them for ``--explain`` (``train/tools/explain.py``).

One module per part: ``api.py`` (:class:`Answerer`), ``results.py`` (:class:`Answer`,
:class:`VideoFeatures`, the errors), ``batch.py`` (``--questions`` lines) and ``cli.py`` (``vqa-answer``).
Rebuilding the feature set from the checkpoint's provenance is extraction knowledge and lives in
``extract/rebuild.py``; its errors (:class:`~extract.rebuild.BackboneMismatchError`,
:class:`~extract.rebuild.ImportedFeaturesError`) are re-exported here, as ``from_checkpoint`` raises them.
"""

from extract.rebuild import BackboneMismatchError, ImportedFeaturesError, RebuildError
from train.tools.answer.api import Answerer
from train.tools.answer.batch import BadRequest, read_requests
from train.tools.answer.cli import check_writable, format_answer, main, parse_backbones
from train.tools.answer.results import Answer, AnswerError, OldCheckpointError, VideoFeatures, named_attention

__all__ = [
    "Answer",
    "AnswerError",
    "Answerer",
    "BackboneMismatchError",
    "BadRequest",
    "ImportedFeaturesError",
    "OldCheckpointError",
    "RebuildError",
    "VideoFeatures",
    "check_writable",
    "format_answer",
    "main",
    "named_attention",
    "parse_backbones",
    "read_requests",
]
