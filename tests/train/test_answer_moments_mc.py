"""vqa-answer end to end for moment retrieval (CMIN ``--query``) and multiple choice (``--candidates``).

One module fixture: the demo's ActivityNet-Captions and How2QA layouts at a small scale, ``cmin`` and
``siasamrea`` features extracted from the raw videos with small RANDOM-weight backbones (the extraction
engine, in-process), a tiny CMIN and a tiny SiaSamRea run of one epoch. ``vqa-answer`` recomputes the
features from the raw videos and must give the runs' ``predictions_test.jsonl`` predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from extract.engine import EngineConfig, ExtractionJob, run_extraction
from extract.featuresets import FeatureOptions
from pipelines.datasets import get_dataset
from pipelines.demo import generate_demo
from train.checkpoint import load_checkpoint, save_checkpoint
from train.cli import build_cli
from train.tools.answer import Answerer, OldCheckpointError, format_answer, main

pytestmark = pytest.mark.slow

CMIN_OPTIONS = FeatureOptions(motion="r3d_18", motion_size=16, clip_len=4, stride=4, weights="random")
SIA_OPTIONS = FeatureOptions(appearance="resnet18", image_size=32, stride=4, weights="random")
CMIN_ARGS = ("--set", "train.lr=1e-2", "--set", "moment.pca_dim=8", "--set", "moment.num_steps=16",
             "--set", "model.window_widths=[2,4,8]", "--set", "model.d_model=16", "--set", "model.word_dim=8",
             "--set", "model.num_heads=2", "--set", "model.freeze_embeddings=false",
             "--set", "moment.center_clips=true")  # as the demo: vqa-answer must centre the same way
SIA_ARGS = ("--set", "train.lr=3e-3", "--set", "model.hidden_dim=16", "--set", "model.num_heads=2",
            "--set", "model.num_layers=1", "--set", "model.word_dim=16", "--set", "model.clip_frames=4",
            "--set", "model.affinity_dim=8", "--set", "model.num_siamese=2")


def _extract_and_train(base: Path, dataset: str, feature_set: str, options: FeatureOptions, model: str,
                       extra: tuple[str, ...]) -> tuple[Path, Path]:
    root = base / "data" / dataset
    job = ExtractionJob(out_dir=base / f"features-{model}", feature_set=feature_set, options=options,
                        videos=get_dataset(dataset)(root).videos(), root=root, shard_size=64)
    assert run_extraction(job, EngineConfig(backend="local", progress=False)).failed == 0
    out = base / f"run-{model}"
    args = [model, "--dataset", dataset, "--root", str(root), "--features", str(job.out_dir),
            "--out", str(out), "--device", "cpu", "--no-progress", "--epochs", "1", "--batch-size", "8",
            "--seed", "0", "--set", "train.scheduler=none", "--set", "train.feature_norm=standardize", *extra]
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code == 0, res.output
    return root, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("answer-mc-moment")
    generate_demo(base / "data", seed=0, scale=0.05)
    return {
        "cmin": _extract_and_train(base, "activitynet-captions", "cmin", CMIN_OPTIONS, "cmin", CMIN_ARGS),
        "siasamrea": _extract_and_train(base, "how2qa", "siasamrea", SIA_OPTIONS, "siasamrea", SIA_ARGS),
    }


def _predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]


def _invoke(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cmin_queries_give_the_runs_top_moments(runs, tmp_path):
    root, run = runs["cmin"]
    adapter = get_dataset("activitynet-captions")(root)
    queries = {m.qid: m for m in adapter.moments("test")}
    paths = {v.video_id: v.path for v in adapter.videos()}
    preds = _predictions(run)
    video = preds[0]["video_id"]
    mine = [p for p in preds if p["video_id"] == video]
    answerer = Answerer.from_checkpoint(run / "checkpoints" / "best.pt")
    assert answerer.query_note is None  # the demo queries were parsed by the chain: new ones are too
    # batch mode: every test query of one video (extracted once), a "query" field per line
    requests = [{"video": str(paths[video]), "query": queries[p["qid"]].query, "id": p["qid"]} for p in mine]
    lines = answerer.answer_many(requests)
    assert [x["id"] for x in lines] == [p["qid"] for p in mine]
    for line, p in zip(lines, mine, strict=True):
        assert set(line) == {"video", "query", "moments", "id"}, line
        got = [t for m in line["moments"] for t in (m["start"], m["end"])]
        want = [t for m in p["prediction"] for t in m[:2]]
        assert got == pytest.approx(want, abs=2e-3), (p["qid"], got, want)  # the same ranked moments
        scores = [m["score"] for m in line["moments"]]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx([m[2] for m in p["prediction"]], abs=1e-4)
    table = format_answer(answerer.answer(str(paths[video]), queries[mine[0]["qid"]].query))
    assert "rank  start (s)  end (s)  score" in table and f"query: {queries[mine[0]['qid']].query}" in table


def test_cmin_cli_query_json_and_timeline(runs, tmp_path, capsys):
    root, run = runs["cmin"]
    adapter = get_dataset("activitynet-captions")(root)
    pred = _predictions(run)[0]
    query = next(m for m in adapter.moments("test") if m.qid == pred["qid"])
    video = next(v.path for v in adapter.videos() if v.video_id == pred["video_id"])
    fig = tmp_path / "timeline.png"
    ckpt = str(run / "checkpoints" / "best.pt")
    code, out, err = _invoke(["--checkpoint", ckpt, "--video", str(video), "--query", query.query, "--json",
                              "--explain", str(fig), "--ground-truth", f"{query.start_s},{query.end_s}"],
                             capsys)
    assert code == 0, err
    line = json.loads(out)
    assert line["query"] == query.query and len(line["moments"]) == len(pred["prediction"])
    top = line["moments"][0]
    assert [top["start"], top["end"]] == pytest.approx(pred["prediction"][0][:2], abs=2e-3)
    assert 0 <= top["start"] <= top["end"] <= query.duration_s + 1e-6
    image = Image.open(fig)
    assert image.format == "PNG" and image.width >= 900 and image.height > 400
    code, _, err = _invoke(["--checkpoint", ckpt, "--video", str(video), "--question", "what ?"], capsys)
    assert code == 1 and "--query" in err and "Traceback" not in err


def test_cmin_checkpoint_carries_its_query_parser(runs, tmp_path, capsys):
    _, run = runs["cmin"]
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    meta = ckpt["meta"]
    assert meta["query_parse"] == {"parser": "chain", "labels": {"adj": 1}}
    assert set(meta["feature_projection"]["clips"]) == {"mean", "components"}
    meta.pop("query_parse")
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt)
    with pytest.raises(OldCheckpointError, match="query_parse"):
        Answerer.from_checkpoint(old)


def test_multiple_choice_candidates_match_the_run(runs, capsys):
    root, run = runs["siasamrea"]
    adapter = get_dataset("how2qa")(root)
    records = {r.qid: r for r in adapter.records("test")}
    paths = {v.video_id: v.path for v in adapter.videos()}
    preds = _predictions(run)
    assert len(preds) >= 2
    assert load_checkpoint(run / "checkpoints" / "best.pt")["meta"]["subtitles"] is True  # the demo has them
    assert any(records[p["qid"]].subtitle for p in preds[:2])
    for p in preds[:2]:
        rec = records[p["qid"]]
        seg = f"{rec.segment[0]},{rec.segment[1]}"
        code, out, err = _invoke(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--video",
                                  str(paths[p["video_id"]]), "--question", rec.question, "--candidates",
                                  "|".join(rec.candidates), "--segment", seg, "--subtitle", rec.subtitle],
                                 capsys)
        assert code == 0, err
        rows = [line.split() for line in out.splitlines()[3:]]  # rank, score, [index], candidate
        assert [int(r[0]) for r in rows] == list(range(1, len(rec.candidates) + 1))
        assert int(rows[0][2].strip("[]")) == p["prediction"], (p, out)
        scores = [float(r[1]) for r in rows]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1


def test_html_reports_of_a_moment_and_a_multiple_choice_run(runs):
    from train.tools.report import main as report_main

    for name in ("cmin", "siasamrea"):
        run = runs[name][1]
        assert report_main([str(run), "--html", "--samples", "1"]) == 0
        page = (run / "report.html").read_text()
        assert "Metrics beside chance level" in page and "RANDOM backbone weights" in page
        images = sorted((run / "report").glob("*.png"))
        assert images and all(f'src="report/{p.name}"' in page for p in images)
        assert "#" not in "".join(p.name for p in images)  # '#' would end the URL
        if name == "cmin":
            assert "chance: best_prior (test)" in page and "chance: random_window (test)" in page
            assert "R@5,IoU=0.5" in page and "mIoU" in page and "true" in page
        else:
            assert "random_choice_accuracy" in page and "Per question type" in page
