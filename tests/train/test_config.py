"""TrainConfig validation, typed building from YAML values, ``--set`` parsing and layering."""

from __future__ import annotations

import dataclasses

import pytest

from models.mspan import MSPANConfig
from train.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_to_dict,
    load_yaml_config,
    merge_sections,
    paper_model_defaults,
    paper_train_defaults,
    parse_overrides,
)


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size) == ("adam", 1e-4, 5e-6, 64)
    assert cfg.milestones == (10, 15, 19, 23, 27) and cfg.gamma == 0.5 and cfg.step_size == 5
    msrvtt = paper_train_defaults("mspan", "msrvtt-qa", None, "open")
    assert msrvtt == {"batch_size": 128, "scheduler": "step", "epochs": 20, "answer_vocab_size": 4000,
                      "grad_clip": None, "amp": "fp32"}
    assert paper_train_defaults("mspan", "tgif", "count", "count")["scheduler"] == "step"
    assert paper_train_defaults("mspan", "tgif", "frameqa", "open")["scheduler"] == "multistep"


def test_masn_hinge_is_averaged_over_pairs_as_the_official_code():
    assert TrainConfig().hinge_reduction == "sum"
    for task, task_type in (("action", "mc"), ("transition", "mc"), ("frameqa", "open")):
        assert paper_train_defaults("masn", "tgif", task, task_type)["hinge_reduction"] == "mean"
    assert "hinge_reduction" not in paper_train_defaults("mspan", "tgif", "action", "mc")
    with pytest.raises(ConfigError, match="hinge_reduction"):
        TrainConfig(hinge_reduction="max")


@pytest.mark.parametrize(
    "dataset, task, task_type, dropout, epochs, answers",
    [  # the official run scripts, train_sh/*.sh
        ("tgif", "action", "mc", 0.1, 30, None),
        ("tgif", "transition", "mc", 0.3, 30, None),
        ("tgif", "frameqa", "open", 0.3, 30, None),
        ("tgif", "count", "count", 0.2, 20, None),
        ("msvd-qa", None, "open", 0.3, 30, 4000),
        ("msrvtt-qa", None, "open", 0.3, 20, 4000),
    ],
)
def test_mspan_per_task_defaults(dataset, task, task_type, dropout, epochs, answers):
    model = paper_model_defaults("mspan", dataset, task, task_type)
    train = paper_train_defaults("mspan", dataset, task, task_type)
    assert model == {"dropout": dropout}
    assert train["epochs"] == epochs and train.get("answer_vocab_size") == answers
    cfg = build_config(MSPANConfig, model, section="model")
    assert cfg.dropout == dropout and cfg.readout_dropout == 0.2


@pytest.mark.parametrize("model, task_type, clip, amp", [
    ("mspan", "open", None, "fp32"),  # official train.py: optimizer.step() on unclipped fp32 gradients
    ("masn", "mc", None, "fp32"),  # official main*.py: the same
    ("cmin", "moment", None, "fp32"),  # official runners/runner_final.py: the same
    ("siasamrea", "open", 5.0, "auto"),  # no code: ClipBERT's fine-tuning (grad_norm 5, mixed precision)
])
def test_gradient_clipping_and_autocast_are_each_models_own(model, task_type, clip, amp):
    """Not HCRN's clip at 12 and bf16 autocast for every model: each model's paper or official code."""
    dataset = "activitynet-captions" if model == "cmin" else "tgif"
    train = paper_train_defaults(model, dataset, None if model == "cmin" else "action", task_type)
    assert (train["grad_clip"], train["amp"]) == (clip, amp)
    cfg = build_config(TrainConfig, train, section="train")
    assert (cfg.grad_clip, cfg.amp) == (clip, amp)


def test_no_per_task_model_defaults_without_an_official_script():
    assert paper_model_defaults("mspan", "how2qa", None, "mc") == {}
    assert paper_model_defaults("other", "tgif", "action", "mc") == {}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        build_config(TrainConfig, {"learning_rate": 1e-3}, section="train")
    msg = str(exc.value)
    assert "train.learning_rate" in msg and "valid keys" in msg
    assert "train.lr" in msg and "train.epochs" in msg


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"epochs": 0}, "train.epochs=0 is invalid: must be >= 1"),
        ({"epochs": "ten"}, "train.epochs='ten' is invalid: expected an integer"),
        ({"epochs": 2.5}, "expected an integer"),
        ({"lr": "fast"}, "train.lr='fast' is invalid: expected a number"),
        ({"lr": -1.0}, "train.lr=-1.0 is invalid"),
        ({"scheduler": "cosine"}, "choose none, step, multistep or inverse_sqrt"),
        ({"amp": True}, "expected a string"),
        ({"milestones": [5, 3]}, "strictly increasing"),
        ({"milestones": 5}, "expected a list"),
        ({"grad_clip": 0}, "train.grad_clip=0.0 is invalid"),
        ({"val_fraction": 1.5}, "between 0 and 1"),
        ({"patience": 0}, "must be >= 1 or null"),
    ],
)
def test_invalid_values_rejected(values, fragment):
    with pytest.raises(ConfigError) as exc:
        build_config(TrainConfig, values, section="train")
    assert fragment in str(exc.value)


def test_values_are_coerced_from_yaml():
    cfg = build_config(
        TrainConfig,
        {"lr": "1e-3", "epochs": 3.0, "milestones": [2, 4], "grad_clip": None, "patience": 2},
        section="train",
    )
    assert cfg.lr == 1e-3 and isinstance(cfg.epochs, int) and cfg.epochs == 3
    assert cfg.milestones == (2, 4) and cfg.grad_clip is None and cfg.patience == 2
    assert config_to_dict(cfg)["milestones"] == [2, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_model_config_validation_goes_through_the_same_path():
    cfg = build_config(MSPANConfig, {"num_scales": 4, "pool": "avg"}, section="model")
    assert cfg.num_scales == 4 and cfg.pool == "avg"
    with pytest.raises(ConfigError, match="model.pool='median' is invalid"):
        build_config(MSPANConfig, {"pool": "median"}, section="model")
    with pytest.raises(ConfigError, match="num_scales"):
        build_config(MSPANConfig, {"num_scales": 0}, section="model")
    with pytest.raises(ConfigError, match="unknown model key.*model.scales.*valid keys.*model.num_scales"):
        build_config(MSPANConfig, {"scales": 4}, section="model")


def test_parse_overrides_and_layers(tmp_path):
    got = parse_overrides(
        ["train.lr=3e-4", "model.pool=avg", "train.milestones=[1, 2]", "train.grad_clip=null"]
    )
    assert got["model"] == {"pool": "avg"}
    assert got["train"]["milestones"] == [1, 2] and got["train"]["grad_clip"] is None
    # YAML 1.1 reads "3e-4" as text; building the config makes it a float
    assert build_config(TrainConfig, got["train"], section="train").lr == 3e-4
    for bad in ["lr=3", "train.lr", "optim.lr=3", "train.a.b=1", "=3"]:
        with pytest.raises(ConfigError, match="--set"):
            parse_overrides([bad])
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: 4\nmodel:\n  pool: avg\n")
    merged = merge_sections(load_yaml_config(str(path)), parse_overrides(["train.lr=0.5"]))
    assert merged == {"train": {"lr": 0.5, "epochs": 4}, "model": {"pool": "avg"}, "moment": {}}
    path.write_text("moment:\n  pca_dim: 64\n")  # moment retrieval's data and loss settings
    merged = merge_sections(load_yaml_config(str(path)), parse_overrides(["moment.num_steps=32"]))
    assert merged["moment"] == {"pca_dim": 64, "num_steps": 32}
    path.write_text("optimizer:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match="c.yaml: unknown top-level key"):
        load_yaml_config(str(path))
    path.write_text("train: [1\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_yaml_config(str(path))
