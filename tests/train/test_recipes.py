"""The model recipes (train/recipes/): each names things that exist, and the trainer obeys them."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import click
import pytest

from models import MODELS
from models.siasamrea import SiaSamReaConfig
from pipelines.official_text import TEXT_RULES
from train.checkpoint import CheckpointError
from train.recipes import RECIPES, TextReading, get_recipe
from train.runner.checks import official_text
from train.tools.convert import build_cli, converter_command
from train.tools.explain import VIEWS


@pytest.mark.parametrize("name", list(MODELS))
def test_a_recipe_names_only_what_exists(name):
    recipe, fields = get_recipe(name), {f.name for f in dataclasses.fields(MODELS[name].config_cls)}
    assert set(recipe.path_keys) | set(recipe.eval_keys) <= fields
    assert set(recipe.text_rules) <= set(TEXT_RULES)
    assert recipe.explain.view in VIEWS
    if recipe.converter is not None:
        command = converter_command(recipe.converter)
        assert isinstance(command, click.Command) and command.name == name
    assert bool(recipe.converter) == bool(recipe.text_rules)  # a release's text is read by its own rules


def test_vqa_convert_has_one_subcommand_per_recipe_with_a_converter():
    with_converter = sorted(n for n, r in RECIPES.items() if r.converter)
    assert sorted(build_cli().commands) == with_converter == ["masn", "mspan"]


def test_unknown_recipe_names_where_to_add_it():
    with pytest.raises(KeyError, match="train/recipes/"):
        get_recipe("x")


def test_siasamrea_reads_its_text_as_configured():
    read = get_recipe("siasamrea").text_reading
    assert read(SiaSamReaConfig()) == TextReading(subtitles=True)
    cfg = SiaSamReaConfig(text_encoder="transformer", text_encoder_path="/bert", text_max_len=32,
                          use_subtitles=False, subtitle_max_len=16)
    assert read(cfg) == TextReading(subtitles=False, encoder=True, encoder_path="/bert", max_len=32,
                                    subtitle_max_len=16)
    assert get_recipe("mspan").text_reading(None) == TextReading()


def test_a_converted_checkpoint_must_name_a_text_rule_of_its_model():
    spec = SimpleNamespace(model="mspan", checkpoint="conv.pt")
    meta = {"task_type": "open", "text_rule": "masn", "question_vocab": ["<pad>", "<unk>"],
            "answer_vocab": ["red"]}
    with pytest.raises(CheckpointError, match="'masn' is not one of mspan's .mspan-tgif, mspan-msqa."):
        official_text(spec, None, meta, "open")
