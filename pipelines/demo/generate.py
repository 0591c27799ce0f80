"""``generate_demo``: plans every layout from the seed (in a fixed order of random draws), renders and
writes the videos and annotations atomically, and writes ``DEMO.json`` first incomplete and last complete."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import write_json_atomic
from pipelines.demo.activitynet_captions import (
    ANET_EXTRA,
    ANET_EXTRA_MIN,
    ANET_FPS,
    _anet_annotations,
    _anet_summary,
    _plan_anet,
    _render_anet,
)
from pipelines.demo.activitynet_qa import _anetqa_annotations, _anetqa_summary, _plan_anetqa
from pipelines.demo.common import (
    BACKGROUND_LEVELS,
    DEMO_FORMAT,
    DIRECTIONS,
    FLASH_RGB,
    FRAME_SIZE,
    PALETTE,
    SHAPES,
    _scaled,
    _write_text,
)
from pipelines.demo.how2qa import _how2qa_annotations, _how2qa_subtitles, _how2qa_summary, _plan_how2qa
from pipelines.demo.movers import _Mover, _plan_movers, _render_mover
from pipelines.demo.msrvtt import (
    MSRVTT_FPS,
    MSRVTT_FRAMES,
    MSRVTT_MAX_FLASHES,
    _msrvtt_annotations,
    _msrvtt_summary,
)
from pipelines.demo.qa_scenes import QA_FPS, _qa_rng, _render_qa
from pipelines.demo.tgif import (
    MAX_FLASHES,
    MOVER_FRAMES,
    TGIF_COLUMNS,
    TGIF_FPS,
    _plan_groups,
    _plan_stills,
    _render_scene,
    _tgif_annotations,
    _tgif_summary,
    _tsv,
)
from pipelines.version import toolkit_version
from pipelines.videowrite import write_video

# Bumped instead of DEMO_FORMAT (which seeds every layout's random stream) when only the
# ActivityNet-Captions layout changes: 2 = val_2 an independent second annotation of val_1's videos.
ANET_FORMAT = 2


# Bumped when the videos' encoding changes (same frames, other bytes): 2 = mp4 written byte-deterministically
# (pipelines.videowrite: x264 without mbtree, one thread, bit-exact muxing).
VIDEO_FORMAT = 2


# Bumped when only the How2QA layout's files change: 2 = how2_subtitles.jsonl added.
HOW2QA_FORMAT = 2


def _write_qa_layouts(out: Path, plan: dict[str, Any], paths: dict[str, list[Path]]) -> None:
    for video, path in zip(plan["how2qa"] + plan["anetqa"], paths["how2qa"] + paths["activitynet-qa"],
                           strict=True):
        write_video(path, _render_qa(video), fps=QA_FPS)
    for split, rows in plan["how2qa_ann"].items():
        _write_text(out / "how2qa" / f"how2qa_{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_text(out / "how2qa" / "how2_subtitles.jsonl",
                "".join(json.dumps(r) + "\n" for r in _how2qa_subtitles(plan["how2qa"])))
    for split, files in plan["anetqa_ann"].items():
        for kind, rows in files.items():
            write_json_atomic(out / "activitynet-qa" / f"{split}_{kind}.json", rows)


def _plan(seed: int, scale: float) -> dict[str, Any]:
    rng = np.random.default_rng([DEMO_FORMAT, seed])
    movers = _plan_movers(rng, _scaled("tgif_mover", scale), name_fmt="demo_move{:04d}",
                          num_frames=MOVER_FRAMES, actions=(*DIRECTIONS, "grow"), max_flashes=MAX_FLASHES,
                          colour_change=True)
    stills, locations = _plan_stills(rng, _scaled("tgif_still", scale))
    groups = _plan_groups(rng, _scaled("tgif_group", scale))
    clips = _plan_movers(rng, _scaled("msrvtt", scale), name_fmt="video{}", num_frames=MSRVTT_FRAMES,
                         actions=DIRECTIONS, max_flashes=MSRVTT_MAX_FLASHES, colour_change=False)
    anet = _plan_anet(rng, _scaled("anet", scale))
    qa_rng = _qa_rng(seed)
    how2qa = _plan_how2qa(qa_rng, _scaled("how2qa", scale))
    anetqa = _plan_anetqa(qa_rng, _scaled("anetqa", scale))
    extra = max(ANET_EXTRA_MIN, int(round(ANET_EXTRA * scale)))
    anet += _plan_anet(np.random.default_rng([DEMO_FORMAT, seed, 1]), extra, used={v.name for v in anet})
    return {
        "how2qa": how2qa, "anetqa": anetqa, "how2qa_ann": _how2qa_annotations(qa_rng, how2qa),
        "anetqa_ann": _anetqa_annotations(anetqa),
        "movers": movers, "stills": stills, "groups": groups, "clips": clips, "anet": anet,
        "tgif": _tgif_annotations(rng, movers, stills, locations, groups),
        "msrvtt": _msrvtt_annotations(rng, clips),
        "anet_ann": _anet_annotations(rng, anet),
    }


def _video_paths(out: Path, plan: dict[str, Any]) -> dict[str, list[Path]]:
    gifs = plan["movers"] + plan["stills"] + plan["groups"]
    return {
        "tgif": [out / "tgif" / "gifs" / f"{v.name}.gif" for v in gifs],
        "msrvtt-qa": [out / "msrvtt-qa" / "video" / f"{m.name}.mp4" for m in plan["clips"]],
        "activitynet-captions": [out / "activitynet-captions" / "videos" / f"{v.name}.mp4"
                                 for v in plan["anet"]],
        "how2qa": [out / "how2qa" / "videos" / f"{v.name}.mp4" for v in plan["how2qa"]],
        "activitynet-qa": [out / "activitynet-qa" / "videos" / f"v_{v.name}.mp4" for v in plan["anetqa"]],
    }


_VIDEO_PATTERNS = {
    "tgif/gifs": re.compile(r"demo_(move|still|group)\d{4}\.gif"),
    "msrvtt-qa/video": re.compile(r"video\d+\.mp4"),
    "activitynet-captions/videos": re.compile(r"v_[A-Za-z0-9_-]{11}\.mp4"),
    "how2qa/videos": re.compile(r"demo_how2qa_\d{4}\.mp4"),
    "activitynet-qa/videos": re.compile(r"v_[A-Za-z0-9_-]{11}\.mp4"),
}


def _remove_stale(out: Path, keep: set[Path]) -> None:
    """Delete videos of an earlier demo generation (our names only) that the new plan does not list."""
    for sub, pattern in _VIDEO_PATTERNS.items():
        folder = out / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and pattern.fullmatch(p.name) and p not in keep:
                p.unlink()


def generate_demo(out_dir: str | os.PathLike, *, seed: int = 0, scale: float = 1.0) -> dict:
    """Write the demo datasets (TGIF-QA, MSRVTT-QA and ActivityNet-Captions layouts) under ``out_dir``.

    The output depends only on ``seed`` and ``scale`` (and DEMO_FORMAT). Every file is written
    atomically; ``DEMO.json`` is written first with ``"complete": false`` and rewritten last, so a
    directory whose ``DEMO.json`` is complete and matches the arguments is reused as it is (nothing is
    rewritten), and an interrupted run is simply redone. Videos of an earlier generation in the same
    directory that the new one does not list are removed.

    Args:
        out_dir: output directory; created if missing. It must be empty or hold an earlier demo
            (a ``DEMO.json``), so that real datasets are never overwritten.
        seed: random seed; the same seed and scale give byte-identical annotations and identical
            decoded frames.
        scale: multiplies the number of videos (1.0: 320 GIFs, 60 MSRVTT clips, 120 ActivityNet
            videos, 40 How2QA and 60 ActivityNet-QA videos; each kind keeps a small minimum so that
            every split is non-empty).

    Returns:
        The summary also written to ``out_dir/DEMO.json``: seed, scale, counts per dataset, split and
        task, what each question type depends on, chance levels, palette, shapes, sizes in bytes.

    Raises:
        ValueError: ``scale`` is not positive, or ``out_dir`` is a non-empty directory without
            ``DEMO.json``.
    """
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed, scale = int(seed), float(scale)
    out = Path(out_dir)
    marker = out / "DEMO.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; pass a new or empty directory for the demo")
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None  # an unreadable marker of ours: regenerate
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(
            f"{out} is not empty and has no DEMO.json, so it is not a demo directory; refusing to write the "
            "demo data there (it could overwrite a real dataset). Pass a new or empty directory."
        )

    plan = _plan(seed, scale)
    paths = _video_paths(out, plan)
    all_videos = [p for ps in paths.values() for p in ps]
    header = {"generator": "pipelines.demo", "format": DEMO_FORMAT,
              "activitynet_captions_format": ANET_FORMAT, "video_format": VIDEO_FORMAT,
              "how2qa_format": HOW2QA_FORMAT, "seed": seed,
              "scale": scale}
    if (isinstance(previous, dict) and previous.get("complete") is True
            and all(previous.get(k) == v for k, v in header.items())
            and all(p.is_file() for p in all_videos)):
        return previous

    write_json_atomic(marker, {**header, "complete": False})
    _remove_stale(out, set(all_videos))
    _write_layouts(out, plan, paths)
    summary = _summary(out, header, plan, paths)
    write_json_atomic(marker, summary)
    return summary


def _write_layouts(out: Path, plan: dict[str, Any], paths: dict[str, list[Path]]) -> None:
    """Every layout's videos and annotation files, in the plan's order."""
    for script, path in zip(plan["movers"] + plan["stills"] + plan["groups"], paths["tgif"], strict=True):
        frames = _render_mover(script) if isinstance(script, _Mover) else _render_scene(script)
        write_video(path, frames, fps=TGIF_FPS)
    for task, splits in plan["tgif"].items():
        for split, rows in splits.items():
            csv_path = out / "tgif" / "dataset" / f"{split}_{task}_question.csv"
            _write_text(csv_path, _tsv(TGIF_COLUMNS[task], rows))

    for clip, path in zip(plan["clips"], paths["msrvtt-qa"], strict=True):
        write_video(path, _render_mover(clip), fps=MSRVTT_FPS)
    for split, rows in plan["msrvtt"].items():
        write_json_atomic(out / "msrvtt-qa" / f"{split}_qa.json", rows)

    for video, path in zip(plan["anet"], paths["activitynet-captions"], strict=True):
        write_video(path, _render_anet(video), fps=ANET_FPS)
    for split, entries in plan["anet_ann"].items():
        write_json_atomic(out / "activitynet-captions" / f"{split}.json", entries)

    _write_qa_layouts(out, plan, paths)


def _summary(out: Path, header: dict[str, Any], plan: dict[str, Any], paths: dict[str, list[Path]]) -> dict:
    """``DEMO.json``'s complete content: the header, the frame, each layout's summary, sizes in bytes."""
    sizes = {name: sum(f.stat().st_size for f in (out / name).rglob("*") if f.is_file())
             for name in ("tgif", "msrvtt-qa", "activitynet-captions", "how2qa", "activitynet-qa")}
    return {
        **header,
        "complete": True,
        "toolkit_version": toolkit_version(),
        "frame_size": FRAME_SIZE,
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "shapes": list(SHAPES),
        "background": {"quadrant_greys_tl_tr_bl_br": list(BACKGROUND_LEVELS), "flash_rgb": list(FLASH_RGB)},
        "datasets": {
            "tgif": _tgif_summary(plan["tgif"], len(paths["tgif"])),
            "msrvtt-qa": _msrvtt_summary(plan["msrvtt"], len(paths["msrvtt-qa"])),
            "activitynet-captions": _anet_summary(plan["anet_ann"], len(paths["activitynet-captions"])),
            "how2qa": _how2qa_summary(plan["how2qa_ann"], len(paths["how2qa"])),
            "activitynet-qa": _anetqa_summary(plan["anetqa_ann"], len(paths["activitynet-qa"])),
        },
        "bytes": sizes,
    }
