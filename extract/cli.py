"""``vqa-extract``: video features into sharded HDF5, with Ray, resume and failure records.

Bare form (extract)::

    vqa-extract --dataset folder --root DIR --out OUT --features mspan \\
        [--appearance resnet18 --motion r3d_18 --image-size 112 --weights random --device cpu]

Subcommands: ``import`` (feature files released by the papers' authors, ``extract/importer.py``),
``export-hcrn`` (HCRN's file layout), ``demo-data`` (the synthetic demo datasets),
``info`` (a feature directory's manifest summary), ``verify`` (every shard's checksum), ``repair``
(rebuild a lost manifest from the shards). Nothing is parsed at import time: ``main()`` runs the
click group.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

__all__ = ["cli", "main"]

EXIT_FAILED_VIDEOS = 3


def _set_defaults(name: str) -> str:
    """One line: the backbones and input sides feature set ``name`` uses by default."""
    from extract.featuresets import FeatureOptions, resolve_options

    o = resolve_options(name, FeatureOptions(weights="random"))
    parts = []
    if o.appearance:
        parts.append(f"{o.appearance}@{o.image_size}")
    if o.motion:
        parts.append(f"{o.motion}@{o.motion_size}")
    if o.detector:
        parts.append(f"{o.detector} ({o.max_objects} boxes/frame)")
    return " + ".join(parts)


def _listing() -> str:
    """Datasets, feature sets, backbones and detectors for --help (imported only when help is shown)."""
    from pipelines.datasets import DATASETS

    lines = ["Datasets (--dataset): " + ", ".join(DATASETS)]
    try:
        from extract.featuresets import FEATURE_SETS

        lines.append("Feature sets (--features) and their default backbones:")
        for name in FEATURE_SETS:
            lines.append(f"  {name:<16} {_set_defaults(name)}")
    except ImportError as err:  # the feature sets module failed to import: say so instead of hiding it
        lines.append(f"Feature sets: unavailable ({err})")
    from extract.backbones import BACKBONES

    lines.append("Backbones (--appearance / --motion / --checkpoint NAME=PATH):")
    for name, spec in BACKBONES.items():
        lines.append(f"  {name:<16} {spec.kind:<5} {spec.feature_dim:>5}-d  {spec.description}")
    from extract.objects import DETECTORS

    lines.append("Detectors (masn: --detector / --checkpoint NAME=PATH):")
    for name, entry in DETECTORS.items():
        default = "  (default)" if name == _default_detector() else ""
        lines.append(f"  {name:<38} {entry.description}{default}")
    return "\n".join(lines)


def _default_detector() -> str:
    from extract.objects import DetectorSettings

    return DetectorSettings.name


class _Group(click.Group):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        with formatter.indentation():
            for line in _listing().splitlines():  # pre-formatted: written as is, not re-wrapped
                formatter.write(" " * formatter.current_indent + line + "\n")


def _parse_checkpoints(specs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``NAME=PATH`` pairs for backbones (``BACKBONES``) and detectors (``DETECTORS``)."""
    from extract.backbones import BACKBONES
    from extract.objects import DETECTORS

    known = [*BACKBONES, *DETECTORS]
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(
                f"--checkpoint {spec!r}: expected NAME=PATH, e.g. r3d152_k700=/w/r3d152_K_200ep.pth"
            )
        if name not in known:
            raise click.UsageError(
                f"--checkpoint {spec!r}: unknown backbone or detector {name!r}; one of {', '.join(known)}"
            )
        file = Path(path).expanduser()
        if not file.is_file():
            raise click.UsageError(f"--checkpoint {spec!r}: file {file} does not exist")
        if name in out:
            raise click.UsageError(f"--checkpoint given twice for {name!r}")
        out[name] = str(file.resolve())
    return tuple(sorted(out.items()))


_FLAG = {"detector_min_size": "detector-size"}


def _ignored_options(given, resolved) -> list[str]:
    """The flags the user gave that the feature set does not use (cleared by the resolution)."""
    from dataclasses import fields

    from extract.pca import PCA_NAME

    out = []
    for f in fields(given):
        value = getattr(given, f.name)
        if f.name == "checkpoints":
            kept = {name for name, _ in resolved.checkpoints}
            out += ["--pca" if name == PCA_NAME else f"--checkpoint {name}=..." for name, _ in value
                    if name not in kept]
        elif value != f.default and getattr(resolved, f.name) == f.default:
            out.append("--" + _FLAG.get(f.name, f.name.replace("_", "-")))
    return out


def _precision_note(options) -> str:
    """Why the precision is what it is, for the start-up line."""
    from extract.accel import bf16_native

    native = bf16_native(options.device)
    if options.precision == "bf16" and not native:
        return " (warning: this device has no native bf16, so it is emulated and many times slower than fp32)"
    return " (bf16 is native here)" if native else " (no native bf16 here)"


def _random_banner(echo) -> None:
    bar = "!" * 78
    echo(bar)
    echo("!! WARNING: --weights random: every backbone (and detector) has RANDOM weights.")
    echo("!! The features exercise the pipeline (tests, demos); they are NOT research features.")
    echo("!! Shard attributes record weights='random'.")
    echo(bar)


@click.group(
    cls=_Group,
    invoke_without_command=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="Exit status: 0 all videos extracted, 3 some videos failed (listed in OUT/manifest.json), "
    "1 error (one line naming the file; --debug shows the traceback), 2 usage error, "
    "130 interrupted (re-run the same command to resume).",
)
@click.option("--dataset", default="folder", show_default=True, help="Dataset adapter (see the list below).")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root directory.")
@click.option("--task", default=None, help="Task for datasets with several (TGIF-QA: action, count, ...).")
@click.option("--out", type=click.Path(path_type=Path), help="Output feature directory.")
@click.option("--features", "feature_set", default="mspan", show_default=True, help="Feature set.")
@click.option("--appearance", default=None, help="Appearance backbone (default: the feature set's).")
@click.option("--motion", default=None, help="Motion backbone (default: the feature set's).")
@click.option("--image-size", type=click.IntRange(min=8), default=None, help="Appearance input side.")
@click.option("--motion-size", type=click.IntRange(min=8), default=None, help="Motion input side.")
@click.option(
    "--weights",
    type=click.Choice(["pretrained", "random"]),
    default=None,
    help="Backbone weights (random: tests and demos only).",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    metavar="NAME=PATH",
    help="Local checkpoint for a backbone or detector, in its native format (repeatable).",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Inference device.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default=None,
    help="Backbone autocast: auto = bf16 where the device computes bf16 natively (CUDA with bf16, CPUs "
    "with AVX-512 BF16 or AMX), else fp32 [auto]. The resolved value is recorded; the detector runs in fp32.",
)
@click.option(
    "--motion-layer",
    type=click.Choice(["fc7", "fc6"]),
    default=None,
    help="C3D (c3d_sports1m): the fully-connected layer the features come from [fc7].",
)
@click.option(
    "--pca",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="cmin: project the clip features with this PCA file: the ActivityNet release's "
    "PCA_activitynet_v1-3.hdf5 (data/U, data/x_mean) or an .npz with mean and components.",
)
@click.option(
    "--pca-dim", type=click.IntRange(min=1), default=None, help="cmin with --pca: components kept [500]."
)
@click.option("--num-frames", type=click.IntRange(min=1), default=None, help="Frames per video (mspan N).")
@click.option("--clip-len", type=click.IntRange(min=1), default=None, help="Motion window / clip length.")
@click.option(
    "--stride", type=click.IntRange(min=1), default=None, help="Dense clip stride (cmin, siasamrea)."
)
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Maximum frames (masn T).")
@click.option(
    "--frame-sampling",
    type=click.Choice(["uniform", "first"]),
    default=None,
    help="masn: T frames of a longer video spread over all of it, or its first T (official loader) [uniform]",
)
@click.option(
    "--detector",
    default=None,
    help="masn: object detector (see the list below); bottomup_r101_vg gives MASN's own kind of objects.",
)
@click.option(
    "--max-objects", type=click.IntRange(min=1), default=None, help="masn: object rows per frame [10]."
)
@click.option(
    "--min-objects",
    type=click.IntRange(min=0),
    default=None,
    help="masn: fill up to this many boxes from below the threshold [10; min(10, --max-objects)].",
)
@click.option(
    "--score-threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="masn: keep detections scoring at least this [0.2].",
)
@click.option("--nms-iou", type=click.FloatRange(0, 1), default=None, help="masn: per-class NMS IoU [0.3].")
@click.option(
    "--detector-size",
    type=click.IntRange(min=1),
    default=None,
    help="masn: detector input shorter side [600].",
)
@click.option(
    "--detector-max-size",
    type=click.IntRange(min=1),
    default=None,
    help="masn: detector input longer side at most [1000].",
)
@click.option(
    "--num-proposals", type=click.IntRange(min=1), default=None, help="masn: RPN proposals per image [300]."
)
@click.option("--batch-frames", type=click.IntRange(min=1), default=None, help="Images per backbone forward.")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Record a video as failed, before decoding, when its frames (width x height) exceed this "
    "[40000000: 8K passes].",
)
@click.option(
    "--dtype", type=click.Choice(["float32", "float16"]), default=None, help="Stored feature dtype."
)
@click.option("--appearance-map", is_flag=True, default=False, help="Also store conv5 maps where supported.")
@click.option(
    "--shard-size", type=click.IntRange(min=1), default=256, show_default=True, help="Videos per shard."
)
@click.option(
    "--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
    help="Join a Ray cluster: 'auto' or HOST:PORT (default: start a local one, whatever other Ray runtime "
    "runs on this machine).",
)
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray runtime.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Inference actors (default: one per node on CPU, one per GPU with --device cuda).",
)
@click.option(
    "--placement-timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the inference actors to be placed before stopping (Ray).",
)
@click.option(
    "--local",
    "--no-ray",
    "local",
    is_flag=True,
    default=False,
    help="Run in-process without Ray (same pipeline; for debugging and tests).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Only the first N videos (sorted by id)."
)
@click.option(
    "--overwrite", is_flag=True, default=False, help="Replace an existing output instead of resuming."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the progress bar [default: only when stderr is a terminal].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch threads of the CPU inference actor [default: the Ray runtime's CPUs; --local: torch's].",
)
@click.pass_context
def cli(ctx: click.Context, **kw) -> None:
    """Extract video features into sharded HDF5 (resumable; failed videos are recorded, never zero-filled).

    Re-running the same command after an interruption (even kill -9) completes the missing shards.
    """
    if ctx.invoked_subcommand is not None:
        return
    code = _extract(**kw)
    ctx.exit(code)


def _extract(**kw) -> int:
    from pipelines.datasets import DATASETS, DatasetFormatError, get_dataset
    from pipelines.paths import UnsafePathError

    for required in ("root", "out"):
        if kw[required] is None:
            raise click.UsageError(f"--{required} is required to extract (or use a subcommand, see --help)")
    if kw["dataset"] not in DATASETS:
        raise click.UsageError(f"unknown --dataset {kw['dataset']!r}; one of {', '.join(DATASETS)}")
    root: Path = kw["root"]
    if not root.is_dir():
        raise click.UsageError(f"--root {root} is not a directory")

    from extract.featuresets import FEATURE_SETS, FeatureOptions, build_feature_set
    from extract.objects import DETECTORS
    from extract.pca import PCA_NAME

    if kw["feature_set"] not in FEATURE_SETS:
        raise click.UsageError(f"unknown --features {kw['feature_set']!r}; one of {', '.join(FEATURE_SETS)}")
    from extract.backbones import BACKBONES

    for opt in ("appearance", "motion"):
        if kw[opt] is not None and kw[opt] not in BACKBONES:
            raise click.UsageError(f"unknown --{opt} {kw[opt]!r}; one of {', '.join(BACKBONES)}")
    if kw["detector"] is not None and kw["detector"] not in DETECTORS:
        raise click.UsageError(f"unknown --detector {kw['detector']!r}; one of {', '.join(DETECTORS)}")
    option_fields = {
        "appearance": kw["appearance"],
        "motion": kw["motion"],
        "image_size": kw["image_size"],
        "motion_size": kw["motion_size"],
        "weights": kw["weights"],
        "device": kw["device"],
        "precision": kw["precision"],
        "num_frames": kw["num_frames"],
        "clip_len": kw["clip_len"],
        "stride": kw["stride"],
        "max_frames": kw["max_frames"],
        "frame_sampling": kw["frame_sampling"],
        "batch_frames": kw["batch_frames"],
        "dtype": kw["dtype"],
        "detector": kw["detector"],
        "max_objects": kw["max_objects"],
        "min_objects": kw["min_objects"],
        "score_threshold": kw["score_threshold"],
        "nms_iou": kw["nms_iou"],
        "detector_min_size": kw["detector_size"],
        "detector_max_size": kw["detector_max_size"],
        "num_proposals": kw["num_proposals"],
        "max_pixels": kw["max_pixels"],
        "motion_layer": kw["motion_layer"],
        "pca_dim": kw["pca_dim"],
    }
    options_kw = {k: v for k, v in option_fields.items() if v is not None}
    checkpoints = _parse_checkpoints(kw["checkpoints"]) if kw["checkpoints"] else ()
    if kw["pca"] is not None:
        pca = kw["pca"].expanduser()
        if not pca.is_file():
            raise click.UsageError(f"--pca {kw['pca']}: file {pca} does not exist")
        checkpoints += ((PCA_NAME, str(pca.resolve())),)
    if checkpoints:
        options_kw["checkpoints"] = checkpoints
    if kw["appearance_map"]:
        options_kw["appearance_map"] = True
    try:
        given = FeatureOptions(**options_kw)
        # checks backbone kinds etc. (loads no model); the job runs with the resolved options (the set's
        # defaults filled in), so the manifest's options and the provenance say the same
        built = build_feature_set(kw["feature_set"], given)
        options = built.options
    except (TypeError, ValueError) as err:
        raise click.UsageError(f"invalid feature options: {err}") from err
    networks = [name for name, _ in options.checkpoints if name != PCA_NAME]  # a projection is no network
    if options.weights == "random" and networks:
        names = ", ".join(networks)
        raise click.UsageError(f"--checkpoint ({names}) cannot be combined with --weights random")
    ignored = _ignored_options(given, options)

    try:
        adapter = get_dataset(kw["dataset"])(root, task=kw["task"])
        videos = adapter.videos()
        missing_records = adapter.missing_videos()
    except FileNotFoundError as err:
        raise click.UsageError(str(err)) from err
    except (DatasetFormatError, UnsafePathError) as err:
        raise click.ClickException(str(err)) from err
    if kw["limit"] is not None:
        videos = videos[: kw["limit"]]
    planned = {v.video_id for v in videos}
    missing = {
        m.video_id: f"missing: {m.annotation_file.name} {m.location}; expected at {m.expected_path}"
        for m in missing_records
        if m.video_id in planned
    }
    if not videos:
        raise click.ClickException(f"no videos found under {root} with --dataset {kw['dataset']}")

    from extract.engine import (
        BackendError,
        EngineConfig,
        ExtractionJob,
        OutputInUseError,
        ResumeMismatchError,
        run_extraction,
    )
    from extract.manifest import ManifestError

    err_echo = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if options.weights == "random":
        _random_banner(err_echo)
    for note in built.warnings():
        err_echo(f"vqa-extract: warning: {note}")
    err_echo(f"vqa-extract: precision {options.precision} on {options.device}" + _precision_note(options))
    if ignored:
        err_echo(
            f"vqa-extract: --features {kw['feature_set']} does not use " + ", ".join(ignored) + " (ignored)"
        )
    if missing:
        err_echo(
            f"vqa-extract: {len(missing)} referenced video(s) are missing under {root}; recorded as failed"
        )
    job = ExtractionJob(
        out_dir=kw["out"],
        feature_set=kw["feature_set"],
        options=options,
        videos=videos,
        root=root,
        missing=missing,
        source={
            "dataset": kw["dataset"],
            "root": str(root.resolve()),
            "task": kw["task"],
            "limit": kw["limit"],
        },
        shard_size=kw["shard_size"],
        overwrite=kw["overwrite"],
    )
    config = EngineConfig(
        backend="local" if kw["local"] else "ray",
        address=kw["address"],
        num_cpus=kw["num_cpus"],
        progress=sys.stderr.isatty() if kw["progress"] is None else kw["progress"],
        threads=kw["threads"],
        workers=kw["workers"],
        placement_timeout=kw["placement_timeout"],
    )
    if kw["threads"] and kw["local"]:
        import torch

        torch.set_num_threads(kw["threads"])
    try:
        summary = run_extraction(job, config)
    except (ResumeMismatchError, OutputInUseError, ManifestError, UnsafePathError, BackendError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(summary.format())
    if summary.random_weights:
        _random_banner(err_echo)
    return EXIT_FAILED_VIDEOS if summary.failed else 0


@cli.command("export-hcrn")
@click.option(
    "--features-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="An output of vqa-extract --features hcrn.",
)
@click.option(
    "--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Where to write."
)
@click.option(
    "--dataset",
    type=click.Choice(["tgif", "msvd-qa", "msrvtt-qa"]),
    required=True,
    help="The annotations HCRN trains on: its ids are TGIF-QA's CSV key, MSVD/MSRVTT-QA's video_id.",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="The dataset root (annotation files).",
)
@click.option("--task", default=None, help="TGIF-QA task (frameqa, action, transition, count).")
@click.option(
    "--name",
    default=None,
    help="HCRN's file prefix (default: tgif-qa_<task>, msvd-qa or msrvtt-qa).",
)
@click.option(
    "--allow-missing", is_flag=True, help="Leave out the ids whose video has no features instead of failing."
)
def export_hcrn_cmd(
    features_dir: Path, out: Path, dataset: str, root: Path, task: str | None, name: str | None,
    allow_missing: bool,
) -> None:
    """Write <name>_appearance_feat.h5 (resnet_features) and <name>_motion_feat.h5 (resnext_features)."""
    from extract.hcrn import HCRNExportError, export_hcrn
    from extract.manifest import ManifestError
    from pipelines.datasets import DatasetFormatError, get_dataset

    try:
        adapter = get_dataset(dataset)(root, task=task)
        if dataset == "tgif" and adapter.task is None:
            raise click.UsageError(f"--dataset tgif needs --task, one of: {', '.join(adapter.tasks)}")
        result = export_hcrn(features_dir, out, adapter=adapter, name=name, allow_missing=allow_missing)
    except (HCRNExportError, ManifestError, DatasetFormatError, FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err).strip("'\"")) from err
    for kind, path in result.paths.items():
        click.echo(f"{kind}: {path}")
    click.echo(f"{result.rows} rows (one per id HCRN looks up)")
    if result.skipped:
        click.echo(f"WARNING: {len(result.skipped)} id(s) left out: their videos have no features", err=True)


class _ImportCommand(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        from extract.released import RELEASED_FORMATS

        formatter.write_paragraph()
        formatter.write("Formats (-> the feature set they become; their sources; the datasets they fit):\n")
        for fmt in RELEASED_FORMATS.values():
            roles = " ".join(f"{r}={'DIR' if s.kind == 'dir' else 'FILE'}" for r, s in fmt.roles.items())
            datasets = ", ".join(fmt.datasets)
            formatter.write(f"  {fmt.name:<19} -> {fmt.feature_set:<6} {roles}  [{datasets}]\n")
            formatter.write(f"  {'':<19}    {fmt.description}\n")


@cli.command("import", cls=_ImportCommand)
@click.argument("format_name", metavar="FORMAT")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The feature directory to write (resumed when it holds the same import).")
@click.option("--dataset", required=True, help="The annotations naming the videos (and their ids).")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True,
              help="The dataset root (annotation files; the videos are not needed).")
@click.option("--task", default=None, help="TGIF-QA task (frameqa, action, transition, count).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="masn: T, rows kept per video [20 TGIF-QA, 30 MSVD/MSRVTT-QA].")
@click.option("--max-objects", type=click.IntRange(min=1), default=None,
              help="masn: object rows per frame [10].")
@click.option("--num-frames", type=click.IntRange(min=1), default=None, help="mspan: rows per video [16].")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Stored feature dtype (boxes, times and masks keep theirs).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Videos per shard [256; masn 64, hcrn 128].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output instead of resuming.")
def import_cmd(format_name: str, sources: tuple[str, ...], out: Path, dataset: str, root: Path,
               task: str | None, max_frames: int | None, max_objects: int | None, num_frames: int | None,
               dtype: str, shard_size: int | None, overwrite: bool) -> None:
    """Import feature files released by the papers' authors into a feature directory (manifest + shards).

    SOURCE is FILE or DIR for one-source formats, ROLE=PATH for each source, or a directory holding the
    format's files under their official names. The videos are the ones the annotations of --dataset /
    --root reference, keyed as the dataset adapter keys them; a video the files lack is recorded as
    failed (exit status 3), a file not of the format stops the import. Re-running resumes.
    """
    from extract.engine import OutputInUseError, ResumeMismatchError
    from extract.importer import ImportJob, resolve_sources, run_import
    from extract.manifest import ManifestError
    from extract.released import ImportOptions, ReleasedFormatError, get_format
    from pipelines.datasets import DatasetFormatError, get_dataset
    from pipelines.paths import UnsafePathError

    try:
        fmt = get_format(format_name)
    except KeyError as err:
        raise click.UsageError(str(err).strip("'\"")) from None
    if dataset not in fmt.datasets:
        raise click.UsageError(f"import {fmt.name} fits --dataset {' or '.join(fmt.datasets)}, "
                               f"not {dataset!r}")
    if dataset == "tgif" and task is None:
        raise click.UsageError("--dataset tgif needs --task (frameqa, action, transition, count): the "
                               "released files key videos by the task's question keys")
    options = ImportOptions(max_frames=max_frames, max_objects=max_objects, num_frames=num_frames,
                            dtype=dtype)
    try:
        paths = resolve_sources(fmt, sources, dataset=dataset, task=task,
                                options=fmt.resolve(options, dataset))
        where = {"dataset": dataset, "root": str(root.resolve()), "task": task,
                 "sources": {r: str(p.resolve()) for r, p in paths.items()}}
        job = ImportJob(out_dir=out, format=fmt.name, sources=paths, options=options, source=where,
                        adapter=get_dataset(dataset)(root, task=task), shard_size=shard_size,
                        overwrite=overwrite)
        summary = run_import(job)
    except (ReleasedFormatError, ResumeMismatchError, OutputInUseError, ManifestError, DatasetFormatError,
            UnsafePathError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(summary.format_lines())
    click.get_current_context().exit(summary.exit_code)


@cli.command("demo-data")
@click.option(
    "--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output directory."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiplies the number of videos and questions.",
)
def demo_data_cmd(out: Path, seed: int, scale: float) -> None:
    """Generate the synthetic demo datasets (TGIF-QA, MSRVTT-QA, ActivityNet-Captions layouts)."""
    from pipelines.demo import generate_demo

    info = generate_demo(out, seed=seed, scale=scale)
    click.echo(f"demo data in {out} (seed {seed}, scale {scale})")
    for name, data in sorted(info.get("datasets", {}).items()):
        root = out / data.get("root", name)
        click.echo(f"  {name}: {data.get('videos', '?')} videos, --dataset {name} --root {root}")


@cli.command("info")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info_cmd(out: Path, as_json: bool) -> None:
    """Summarise the feature directory OUT (feature set, provenance, counts, failures)."""
    from extract.manifest import ManifestError, load_manifest
    from extract.shards import mentions_random_weights

    try:
        manifest = load_manifest(out)
    except ManifestError as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    counts = manifest.get("counts", {})
    click.echo(f"{out}: feature set {manifest['feature_set']!r}, status {_state(out, manifest)}")
    click.echo(
        f"  videos: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
        f"{counts.get('pending', 0)} pending of {counts.get('planned', 0)}; "
        f"shards: {counts.get('complete_shards', 0)}/{counts.get('shards', 0)} complete"
    )
    click.echo("  outputs:")
    for name, spec in manifest["outputs"].items():
        shape = ", ".join("T" if s is None else str(s) for s in spec["shape"])
        click.echo(f"    {name}: ({shape}) {spec['dtype']}")
    source = manifest.get("source", {})
    if source:
        click.echo("  source: " + ", ".join(f"{k}={v}" for k, v in source.items() if v is not None))
    provenance = manifest.get("provenance", {})
    for role, backbone in sorted(provenance.get("backbones", {}).items()):
        layer = f" ({backbone['layer']})" if backbone.get("layer") else ""
        click.echo(
            f"  {role} backbone: {backbone.get('name')}{layer} weights={backbone.get('weights')} "
            f"sha256={backbone.get('weights_sha256')}"
        )
    imported = provenance.get("imported")
    if imported:  # vqa-extract import: no backbone ran here
        click.echo(f"  imported: {imported.get('format')} ({imported.get('features')}); "
                   f"follows {imported.get('official_loader')}")
        for role, rec in sorted(imported.get("files", {}).items()):
            what = rec.get("file") or f"{rec.get('directory')}/ ({rec.get('files')} files)"
            digest = rec.get("sha256") or f"listing {rec.get('listing_sha256')}"
            click.echo(f"    {role}: {what}, {rec.get('bytes')} bytes, sha256 {digest}")
    projection = provenance.get("projection")
    if projection:
        click.echo(
            f"  projection: {projection.get('weights_file')} ({projection.get('format')}) "
            f"{projection.get('in_dim')} -> {projection.get('dim')} sha256={projection.get('weights_sha256')}"
        )
    if "samplers" in provenance:
        click.echo("  samplers: " + json.dumps(provenance["samplers"], sort_keys=True))
    scalars = {k: v for k, v in provenance.items() if not isinstance(v, dict | list)}
    click.echo("  provenance: " + ", ".join(f"{k}={v}" for k, v in sorted(scalars.items())))
    if mentions_random_weights(provenance):
        click.echo("  WARNING: extracted with RANDOM backbone weights (not research features)")
    from extract.manifest import check_shard

    damaged = [(e["name"], why) for e in manifest["shards"] if e["complete"] and (why := check_shard(out, e))]
    for name, why in damaged:
        click.echo(f"  DAMAGED shard {name}: {why} (re-run the extraction to extract it again)")
    if not damaged:
        click.echo("  complete shards: present, sizes and ids match the manifest "
                   f"(`vqa-extract verify {out}` checks every checksum)")
    failures = manifest["failures"]
    if failures:
        click.echo(f"  failures ({len(failures)}):")
        for failure in failures[:20]:
            click.echo(f"    {failure['video_id']}: {failure['reason']}")
        if len(failures) > 20:
            click.echo(f"    ... and {len(failures) - 20} more (vqa-extract info --json)")


@cli.command("verify")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
def verify_cmd(out: Path) -> None:
    """Check every complete shard of OUT against the manifest: ids, size and sha256 (reads every byte).

    Exit status 0 when every shard of the plan is complete and agrees, 1 when a shard is damaged (listed;
    re-running the extraction command extracts those shards again) or the extraction is incomplete (the
    message says whether a run is writing OUT now, was killed, or failed).
    """
    from extract.manifest import ManifestError, load_manifest, verify

    try:
        checked, problems = verify(out)
        manifest = load_manifest(out)
    except ManifestError as err:
        raise click.ClickException(str(err)) from err
    for problem in problems:
        click.echo(f"DAMAGED {problem}", err=True)
    if problems:
        raise click.ClickException(
            f"{len(problems)} of {checked} shard(s) failed verification; re-run the vqa-extract command "
            f"that made {out} to extract them again"
        )
    total = len(manifest["shards"])
    click.echo(f"{out}: {checked} of {total} shard(s) complete and verified (ids, size, sha256)")
    if checked < total:
        raise click.ClickException(f"{out} is {_state(out, manifest)}")


def _state(out: Path, manifest: dict) -> str:
    """``complete``, or what is missing and whether a run writes it now, was killed or failed."""
    from extract.engine import LOCK_NAME
    from extract.manifest import describe_state
    from pipelines.atomic import directory_locked

    return describe_state(manifest, writing=directory_locked(out, LOCK_NAME))


@cli.command("repair")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Replace an existing (e.g. unreadable) manifest.json.")
def repair_cmd(out: Path, force: bool) -> None:
    """Rebuild OUT/manifest.json from the shards' own attributes (after it was deleted or damaged)."""
    from extract.manifest import MANIFEST_NAME, ManifestError, rebuild_manifest

    if (out / MANIFEST_NAME).exists() and not force:
        raise click.ClickException(
            f"{out / MANIFEST_NAME} exists; check it with `vqa-extract verify {out}`, or pass --force to "
            "rebuild it from the shards"
        )
    try:
        manifest = rebuild_manifest(out)
    except ManifestError as err:
        raise click.ClickException(str(err)) from err
    counts = manifest["counts"]
    click.echo(
        f"{out / MANIFEST_NAME}: rebuilt from {counts['shards']} shard(s): {counts['done']} videos, "
        f"{counts['failed']} failed"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-extract``."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from pipelines.errors import run_cli

    run_cli(cli, argv, prog_name="vqa-extract", user_errors=_user_errors)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's to fix (one line, no traceback; see pipelines.errors)."""
    from extract.engine import BackendError, OutputInUseError, ResumeMismatchError
    from extract.hcrn import HCRNExportError
    from extract.manifest import ManifestError
    from extract.released import ReleasedFormatError
    from extract.weights import WeightsError
    from pipelines.atomic import DirectoryInUseError
    from pipelines.datasets import DatasetFormatError
    from pipelines.glove import GloveFormatError
    from pipelines.paths import UnsafePathError

    return (BackendError, OutputInUseError, ResumeMismatchError, HCRNExportError, ManifestError,
            WeightsError, DatasetFormatError, GloveFormatError, UnsafePathError, DirectoryInUseError,
            ReleasedFormatError)


if __name__ == "__main__":
    main()
