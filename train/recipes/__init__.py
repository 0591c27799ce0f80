"""Model recipes: each model's training-side knowledge, one module per model, listed by hand in ``RECIPES``.

``models/x.py`` is the network (it reads no config file and knows no dataset); ``train/recipes/x.py`` is
everything else the toolkit knows about model ``x``, as one :class:`Recipe` named ``RECIPE``:

- its paper's or official code's defaults per dataset and task (``train_defaults``, ``model_defaults``)
  and its gradient clipping and precision (``grad_clip``, ``amp``): :func:`paper_train_defaults` and
  :func:`paper_model_defaults` apply them below ``--config`` and ``--set``;
- how its config reads questions (``text_reading``: subtitles, a transformer text encoder and its
  directory) and which config fields may differ from a checkpoint's (``path_keys``: a directory that may
  move; ``eval_keys``: inference-only settings);
- its explanation figure (``explain``: a view of ``train.tools.explain.VIEWS`` by name, with options);
- its converter of released checkpoints (``converter``: ``"module:attribute"`` of a click command) and
  the official text rules its converted checkpoints use (``text_rules``: names of
  ``pipelines.official_text.TEXT_RULES``; the rules stay in ``pipelines``, which imports nothing of
  ``train``).

The trainer (``train/`` outside ``train/tools/``) never imports ``train.tools``: the tools import the
trainer. So a recipe names the tool-side pieces and the tools look them up: ``train.tools.explain`` holds
its views by view name (``frame_attention``, ``object_boxes``, ``clip_frames``, ``timeline``) and
``train.tools.convert`` imports the converter a recipe names when ``vqa-convert`` runs. Every shared
module asks ``get_recipe(name)``; none tests a model's name. A fifth model is ``models/x.py`` with one
line in ``models.MODELS``, and ``train/recipes/x.py`` with one line in ``RECIPES`` (docs/architecture.md,
"Adding a model"; ``tests/train/test_fifth_model.py`` walks it).
"""

from __future__ import annotations

from typing import Any

from train.recipes import cmin, masn, mspan, siasamrea
from train.recipes.base import ExplainView, Recipe, TextReading

__all__ = [
    "RECIPES",
    "ExplainView",
    "Recipe",
    "TextReading",
    "get_recipe",
    "paper_model_defaults",
    "paper_train_defaults",
]


def _registry(*recipes: Recipe) -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    for recipe in recipes:
        if recipe.name in out:
            raise ValueError(f"recipe {recipe.name!r} is listed twice")
        out[recipe.name] = recipe
    return out


RECIPES: dict[str, Recipe] = _registry(
    mspan.RECIPE,
    siasamrea.RECIPE,
    cmin.RECIPE,
    masn.RECIPE,
)


def get_recipe(name: str) -> Recipe:
    """The recipe of a registered model.

    Raises:
        KeyError: no recipe of that name; the message lists the recipes and where to add one.
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"model {name!r} has no recipe (train/recipes/, RECIPES); recipes: "
                       f"{', '.join(sorted(RECIPES))}") from None


def paper_train_defaults(model: str, dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    """Per-dataset training defaults of a model (its recipe's clipping, precision and ``train_defaults``),
    applied below the YAML file and ``--set``; {} for a name without a recipe.

    Args:
        model: registry name; dataset: dataset registry name; task: dataset task (``"frameqa"``) or None;
        task_type: ``"open"``, ``"mc"``, ``"count"`` or ``"moment"``.

    Returns:
        A dict of ``TrainConfig`` field overrides.
    """
    recipe = RECIPES.get(model)
    if recipe is None:
        return {}
    clip_and_precision = {"grad_clip": recipe.grad_clip, "amp": recipe.amp}
    return {**clip_and_precision, **recipe.train_defaults(dataset, task, task_type)}


def paper_model_defaults(model: str, dataset: str, task: str | None, task_type: str) -> dict[str, Any]:
    """Per-dataset model-config defaults of a model (its recipe's ``model_defaults``), applied below the
    YAML file and ``--set``; {} for a name without a recipe."""
    recipe = RECIPES.get(model)
    return {} if recipe is None else recipe.model_defaults(dataset, task, task_type)
