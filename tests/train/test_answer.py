"""vqa-answer: self-contained checkpoints answer questions about raw videos as the run's evaluation did.

One tiny end-to-end run (module scope): demo TGIF-QA data at a small scale, ``mspan`` features extracted
from the GIFs with small RANDOM-weight backbones (the extraction engine, in-process), MSPAN trained a few
epochs on FrameQA and Count. Then ``Answerer`` / ``vqa-answer`` recompute the features from the raw GIFs
and must give exactly the run's ``predictions_test.jsonl`` predictions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from extract.engine import EngineConfig, ExtractionJob, run_extraction
from extract.featuresets import FeatureOptions
from pipelines.datasets import get_dataset
from pipelines.demo import generate_demo
from train.checkpoint import load_checkpoint, save_checkpoint
from train.cli import build_cli
from train.tools.answer import Answerer, BackboneMismatchError, OldCheckpointError, main

pytestmark = pytest.mark.slow

OPTIONS = FeatureOptions(
    appearance="resnet18",
    motion="r3d_18",
    image_size=32,
    motion_size=32,
    clip_len=2,
    num_frames=8,
    weights="random",
    batch_frames=16,
)
MODEL = (
    "model.node_dim=32",
    "model.hidden_dim=32",
    "model.word_dim=16",
    "model.lstm_layers=1",
    "model.num_scales=3",
    "model.dropout=0.0",
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("answer")
    generate_demo(base / "data", seed=0, scale=0.15)
    root = base / "data" / "tgif"
    adapter = get_dataset("tgif")(root)  # the videos of every task
    job = ExtractionJob(
        out_dir=base / "features",
        feature_set="mspan",
        options=OPTIONS,
        videos=adapter.videos(),
        root=root,
        shard_size=64,
    )
    summary = run_extraction(job, EngineConfig(backend="local", progress=False))
    assert summary.failed == 0
    runs = {}
    for task in ("frameqa", "count"):
        out = base / f"run-{task}"
        args = [
            "mspan",
            "--dataset",
            "tgif",
            "--task",
            task,
            "--root",
            str(root),
            "--features",
            str(base / "features"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--set",
            "train.lr=1e-3",
            "--set",
            "train.scheduler=none",
            "--set",
            "train.feature_norm=standardize",
        ]
        for item in MODEL:
            args += ["--set", item]
        res = CliRunner().invoke(build_cli(), args)
        assert res.exit_code == 0, res.output
        runs[task] = out
    return base, root, runs


def _test_questions(root: Path, task: str, out: Path) -> list[tuple[dict, object]]:
    adapter = get_dataset("tgif")(root, task=task)
    paths = {v.video_id: v.path for v in adapter.videos()}
    records = {r.qid: r for r in adapter.records("test")}
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    return [(p, records[p["qid"]], paths[p["video_id"]]) for p in preds]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_checkpoint_is_self_contained(demo_run):
    _, _, runs = demo_run
    for name in ("best.pt", "epoch-0003.pt"):
        ckpt = torch.load(runs["frameqa"] / "checkpoints" / name, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        assert (
            meta["checkpoint_format"] == 2 and meta["model_name"] == "mspan" and meta["task_type"] == "open"
        )
        assert meta["answer_vocab"] and meta["question_vocab"][:2] == ["<pad>", "<unk>"]
        stats = meta["feature_stats"]
        assert set(stats) == {"appearance", "motion"} and stats["appearance"]["std"].shape == (512,)
        prov = meta["provenance"]["features"]["provenance"]
        assert prov["feature_set"] == "mspan" and prov["options"]["image_size"] == 32
        assert prov["backbones"]["appearance"]["weights_sha256"] == "random"
        assert (
            meta["backbone_random_seed"] == 0
            and json.loads(meta["train_config"])["feature_norm"] == "standardize"
        )


@pytest.mark.parametrize("task", ["frameqa", "count"])
def test_answers_equal_the_runs_test_predictions(demo_run, task):
    _, root, runs = demo_run
    answerer = Answerer.from_checkpoint(runs[task] / "checkpoints" / "best.pt")
    assert answerer.random_weights
    rows = _test_questions(root, task, runs[task])
    assert len(rows) >= 5
    for pred, record, path in rows:
        result = answerer.answer(path, record.question)
        assert result.prediction == pred["prediction"], (record.qid, result.to_json(), pred)
        if task == "count":
            assert result.raw == pytest.approx(pred["raw_prediction"], abs=1e-4)
        else:
            probs = [p for _, p in result.answers]
            assert (
                len(result.answers) == 5
                and probs == sorted(probs, reverse=True)
                and 0 < sum(probs) <= 1 + 1e-6
            )


def test_cli_json_explain_and_random_weight_report(demo_run, tmp_path, capsys):
    _, root, runs = demo_run
    pred, record, path = _test_questions(root, "frameqa", runs["frameqa"])[0]
    fig = tmp_path / "explain.png"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--checkpoint",
                str(runs["frameqa"] / "checkpoints" / "best.pt"),
                "--video",
                str(path),
                "--question",
                record.question,
                "--json",
                "--explain",
                str(fig),
            ]
        )
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out.strip())
    assert line["video"] == str(path) and line["question"] == record.question
    assert line["answers"][0]["answer"] == pred["prediction"] and len(line["answers"]) == 5
    assert line["random_weights"] is True and "RANDOM backbone weights" in captured.err
    image = Image.open(fig)
    assert image.format == "PNG" and image.width >= 640 and image.height > 200


def test_batch_mode_answers_good_videos_and_reports_broken_ones(demo_run, tmp_path):
    base, root, runs = demo_run
    rows = _test_questions(root, "frameqa", runs["frameqa"])[:3]
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"GIF89a" + bytes(range(256)) * 4)
    requests = [{"video": str(p), "question": r.question, "id": pr["qid"]} for pr, r, p in rows]
    requests.insert(1, {"video": str(broken), "question": "what is the color of the ball ?", "id": "bad"})
    requests.append({"video": str(tmp_path / "missing.mp4"), "question": "what color ?", "id": "gone"})
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "answers.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--checkpoint",
                str(runs["frameqa"] / "checkpoints" / "best.pt"),
                "--questions",
                str(qfile),
                "--output",
                str(out),
            ]
        )
    assert exit_info.value.code == 3  # some lines failed; every line is still written
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in requests]
    assert "broken.gif" in lines[1]["error"] and "missing.mp4" in lines[-1]["error"]
    good = [x for x in lines if "error" not in x]
    assert [x["answers"][0]["answer"] for x in good] == [pr["prediction"] for pr, _, _ in rows]


def test_wrong_backbone_file_is_refused_naming_both_hashes(demo_run, tmp_path, capsys):
    _, _, runs = demo_run
    ckpt = load_checkpoint(runs["frameqa"] / "checkpoints" / "best.pt")
    backbone = ckpt["meta"]["provenance"]["features"]["provenance"]["backbones"]["appearance"]
    backbone.update(weights="checkpoint", weights_sha256="ab" * 32, weights_file="resnet18-good.pth")
    ckpt["meta"]["provenance"]["features"]["provenance"]["options"]["weights"] = "pretrained"
    pretrained = tmp_path / "pretrained.pt"
    save_checkpoint(pretrained, ckpt)
    wrong = tmp_path / "resnet18-other.pth"
    torch.save({"w": torch.zeros(2)}, wrong)
    with pytest.raises(BackboneMismatchError) as err:
        Answerer.from_checkpoint(pretrained, backbones={"resnet18": wrong})
    text = str(err.value)
    assert "ab" * 32 in text and str(wrong) in text
    from extract.weights import sha256_file

    assert sha256_file(wrong) in text
    with pytest.raises(BackboneMismatchError):  # found by the recorded name in --checkpoint-dir
        shutil.copy(wrong, tmp_path / "resnet18-good.pth")
        Answerer.from_checkpoint(pretrained, checkpoint_dir=tmp_path)
    code, _, err = _cli(
        [
            "--checkpoint",
            str(pretrained),
            "--video",
            "x.gif",
            "--question",
            "q",
            "--backbone",
            f"resnet18={wrong}",
        ],
        capsys,
    )
    assert code == 1 and "sha256" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_checkpoint_from_before_this_change_gets_a_clear_message(demo_run, tmp_path, capsys):
    _, _, runs = demo_run
    ckpt = load_checkpoint(runs["frameqa"] / "checkpoints" / "best.pt")
    for key in ("checkpoint_format", "feature_stats", "backbone_random_seed", "max_question_len"):
        ckpt["meta"].pop(key)
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt)
    with pytest.raises(OldCheckpointError, match="before checkpoints became self-contained.*feature_stats"):
        Answerer.from_checkpoint(old)
    code, _, err = _cli(["--checkpoint", str(old), "--video", "x.gif", "--question", "q"], capsys)
    assert code == 1 and "self-contained" in err and "Traceback" not in err


def test_features_recomputed_from_the_raw_video_equal_the_extracted_ones(demo_run):
    base, root, runs = demo_run
    from extract.reader import FeatureReader

    reader = FeatureReader(base / "features")
    answerer = Answerer.from_checkpoint(runs["frameqa"] / "checkpoints" / "best.pt")
    video = get_dataset("tgif")(root, task="frameqa").videos()[0]
    feats = answerer.extract(video.path)
    for key, value in reader[video.video_id].items():
        np.testing.assert_array_equal(feats.features[key], value, err_msg=key)
    assert feats.frames.shape == (8, 32, 32, 3) and feats.frames.dtype == np.uint8


def test_html_report_has_metrics_types_and_sample_figures(demo_run):
    from train.tools.report import main as report_main

    _, _, runs = demo_run
    run = runs["frameqa"]
    assert report_main([str(run), "--html", "--samples", "2"]) == 0
    page = (run / "report.html").read_text()
    assert "Metrics beside chance level" in page and "majority_answer_accuracy" in page
    assert "Per question type" in page and "RANDOM backbone weights" in page
    assert "Correct test predictions" in page and "Wrong test predictions" in page
    images = sorted((run / "report").glob("*.png"))
    assert 1 <= len(images) <= 4 and all(f'src="report/{p.name}"' in page for p in images)
    assert Image.open(images[0]).format == "PNG"


def test_python_dash_m_runs_the_command(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "train.tools.answer",
                          "--checkpoint", str(tmp_path / "none.pt"), "--video", "v.mp4", "--question", "q"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "none.pt does not exist" in res.stderr and "Traceback" not in res.stderr


def test_a_malformed_batch_line_gets_its_error_line_and_the_others_are_answered(demo_run, tmp_path, capsys):
    _, root, runs = demo_run
    rows = _test_questions(root, "frameqa", runs["frameqa"])[:2]
    good = [json.dumps({"video": str(p), "question": r.question, "id": pr["qid"]}) for pr, r, p in rows]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join([good[0], '{"video": "a.gif", "question": "unclosed', "", '{"video": "a.gif"}',
                                "[1, 2]", good[1]]) + "\n")
    code, out, err = _cli(["--checkpoint", str(runs["frameqa"] / "checkpoints" / "best.pt"),
                           "--questions", str(qfile)], capsys)
    assert code == 3 and "Traceback" not in err, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 5  # one per non-blank line, in order
    assert [x.get("id") for x in (lines[0], lines[4])] == [pr["qid"] for pr, _, _ in rows]
    answers = [x["answers"][0]["answer"] for x in (lines[0], lines[4])]
    assert answers == [pr["prediction"] for pr, _, _ in rows]
    assert [x.get("line") for x in lines[1:4]] == [2, 4, 5]
    assert f"{qfile}:2: not JSON" in lines[1]["error"]
    assert f"{qfile}:4: expected an object" in lines[2]["error"]
    assert "2 answered, 3 failed" in err


def test_unknown_words_are_counted_and_reported(demo_run, tmp_path, capsys):
    _, root, runs = demo_run
    _, record, path = _test_questions(root, "frameqa", runs["frameqa"])[0]
    answerer = Answerer.from_checkpoint(runs["frameqa"] / "checkpoints" / "best.pt")
    known = answerer.answer(path, record.question)  # a test question: every word seen in training
    assert known.unknown_words == {} and "unknown_words" not in known.to_json() and known.notes() == []
    code, out, err = _cli(["--checkpoint", str(runs["frameqa"] / "checkpoints" / "best.pt"), "--video",
                           str(path), "--question", "zyzzyva quokka", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["unknown_words"] == {"question": ["zyzzyva", "quokka"]}
    assert "note: 2 of the 2 words of the question are not in the model's vocabulary (zyzzyva, quokka)" in err
    assert "the answer does not depend on its words" in err


def test_output_locations_are_checked_before_the_work(demo_run, tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    import train.tools.answer

    _, root, runs = demo_run
    pred, record, path = _test_questions(root, "frameqa", runs["frameqa"])[0]
    ckpt = str(runs["frameqa"] / "checkpoints" / "best.pt")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"video": str(path), "question": record.question}) + "\n")
    loaded = []
    real_load = train.tools.answer.Answerer.from_checkpoint
    monkeypatch.setattr(train.tools.answer.Answerer, "from_checkpoint",
                        staticmethod(lambda *a, **k: loaded.append(1) or real_load(*a, **k)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli(["--checkpoint", ckpt, "--questions", str(qfile), "--output",
                         str(blocker / "answers.jsonl")], capsys)
    want = f"cannot write --output {blocker / 'answers.jsonl'}: {blocker} is not a directory; give --output"
    assert code == 1 and err.strip().splitlines()[-1].endswith(want + " another path"), err

    class Full:  # a full disk (simulated): creating the probe works, writing it does not
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", Full)
    for option, target in (("--output", tmp_path / "a.jsonl"), ("--explain", tmp_path / "f.png")):
        args = (["--questions", str(qfile)] if option == "--output" else
                ["--video", str(path), "--question", record.question])
        code, _, err = _cli(["--checkpoint", ckpt, *args, option, str(target)], capsys)
        last = err.strip().splitlines()[-1]
        assert code == 1 and last.endswith(f"cannot write {option} {target}: No space left on device; free "
                                           f"some space or give {option} another path"), err
        assert ".tmp-" not in err and "--out " not in err
    assert loaded == []  # refused before the model was even loaded
    monkeypatch.undo()

    import pipelines.atomic

    def fills_up(final):  # the disk fills while the batch is answered: the answers go to stdout
        raise OSError(errno.ENOSPC, "No space left on device", str(final))

    monkeypatch.setattr(pipelines.atomic, "atomic_path", fills_up)
    code, out, err = _cli(["--checkpoint", ckpt, "--questions", str(qfile), "--output",
                           str(tmp_path / "b.jsonl")], capsys)
    assert code == 1 and json.loads(out)["answers"][0]["answer"] == pred["prediction"]
    assert err.strip().splitlines()[-1].endswith(f"cannot write --output {tmp_path / 'b.jsonl'}: No space "
                                                  "left on device; free some space or give --output another "
                                                  "path; the answers were written to stdout instead"), err


def test_a_masn_record_from_before_frame_sampling_rebuilds_with_first():
    """A checkpoint's feature record written before ``frame_sampling`` existed ran the first T frames:
    vqa-answer rebuilds it so; a record that names the option keeps it."""
    from extract.backbones import RANDOM_SEED
    from extract.featuresets import build_feature_set
    from extract.rebuild import rebuild_feature_set

    fs = build_feature_set("masn", FeatureOptions(weights="random", appearance="resnet18", motion="r3d_18"))
    prov = json.loads(json.dumps(fs.provenance()))
    assert prov["options"]["frame_sampling"] == "uniform"
    rebuilt = rebuild_feature_set(prov, files=(), device="cpu", seed=RANDOM_SEED)
    assert rebuilt.options.frame_sampling == "uniform"
    del prov["options"]["frame_sampling"]
    rebuilt = rebuild_feature_set(prov, files=(), device="cpu", seed=RANDOM_SEED)
    assert rebuilt.options.frame_sampling == "first"
    assert rebuilt.options.max_frames == 20 and rebuilt.options.motion == "r3d_18"
