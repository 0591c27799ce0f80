"""The ``vqa-extract`` group and its bare form: video features into sharded HDF5.

::

    vqa-extract --dataset folder --root DIR --out OUT --features mspan \\
        [--appearance resnet18 --motion r3d_18 --image-size 112 --weights random --device cpu]

The extraction reads as its steps: check the names (``_check_names``), resolve the feature options
(``_feature_options``), plan the videos (``_plan_videos``), say what will run (``_announce``), run the job
(``_run``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

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


# The command-line options that are ``FeatureOptions`` fields: by the same name, or renamed (field -> option)
_OPTION_FIELDS = (
    "appearance", "motion", "image_size", "motion_size", "weights", "device", "precision", "num_frames",
    "clip_len", "stride", "max_frames", "frame_sampling", "batch_frames", "dtype", "detector", "max_objects",
    "min_objects", "score_threshold", "nms_iou", "detector_min_size", "detector_max_size", "num_proposals",
    "max_pixels", "motion_layer", "pca_dim",
)  # fmt: skip
_RENAMED = {"detector_min_size": "detector_size"}


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
            out.append("--" + _RENAMED.get(f.name, f.name).replace("_", "-"))
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
    """The bare form: check, resolve the options, plan the videos, announce, run; the exit status."""
    root = _check_names(kw)
    built, ignored = _feature_options(kw)
    videos, missing = _plan_videos(kw, root)
    err_echo = lambda msg: click.echo(msg, err=True)  # noqa: E731
    _announce(err_echo, kw, built, ignored, missing)
    summary = _run(kw, root, built.options, videos, missing)
    click.echo(summary.format())
    if summary.random_weights:
        _random_banner(err_echo)
    return EXIT_FAILED_VIDEOS if summary.failed else 0


def _check_names(kw: dict) -> Path:
    """The required options, and every registry name given (dataset, feature set, backbones, detector)."""
    from pipelines.datasets import DATASETS

    for required in ("root", "out"):
        if kw[required] is None:
            raise click.UsageError(f"--{required} is required to extract (or use a subcommand, see --help)")
    if kw["dataset"] not in DATASETS:
        raise click.UsageError(f"unknown --dataset {kw['dataset']!r}; one of {', '.join(DATASETS)}")
    root: Path = kw["root"]
    if not root.is_dir():
        raise click.UsageError(f"--root {root} is not a directory")

    from extract.featuresets import FEATURE_SETS
    from extract.objects import DETECTORS

    if kw["feature_set"] not in FEATURE_SETS:
        raise click.UsageError(f"unknown --features {kw['feature_set']!r}; one of {', '.join(FEATURE_SETS)}")
    from extract.backbones import BACKBONES

    for opt in ("appearance", "motion"):
        if kw[opt] is not None and kw[opt] not in BACKBONES:
            raise click.UsageError(f"unknown --{opt} {kw[opt]!r}; one of {', '.join(BACKBONES)}")
    if kw["detector"] is not None and kw["detector"] not in DETECTORS:
        raise click.UsageError(f"unknown --detector {kw['detector']!r}; one of {', '.join(DETECTORS)}")
    return root


def _feature_options(kw: dict):
    """The feature set built with the given options (its defaults filled in), and the flags it ignores."""
    from extract.featuresets import FeatureOptions, build_feature_set
    from extract.pca import PCA_NAME

    options_kw = {f: kw[_RENAMED.get(f, f)] for f in _OPTION_FIELDS if kw[_RENAMED.get(f, f)] is not None}
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
    except (TypeError, ValueError) as err:
        raise click.UsageError(f"invalid feature options: {err}") from err
    options = built.options
    networks = [name for name, _ in options.checkpoints if name != PCA_NAME]  # a projection is no network
    if options.weights == "random" and networks:
        names = ", ".join(networks)
        raise click.UsageError(f"--checkpoint ({names}) cannot be combined with --weights random")
    return built, _ignored_options(given, options)


def _plan_videos(kw: dict, root: Path):
    """The dataset's videos (the first --limit), and the referenced ones missing (id -> failure reason)."""
    from pipelines.datasets import DatasetFormatError, get_dataset
    from pipelines.paths import UnsafePathError

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
    return videos, missing


def _announce(err_echo, kw: dict, built, ignored: list[str], missing: dict) -> None:
    """On stderr before the run: the random-weights banner, the set's warnings, precision, what is ignored."""
    options = built.options
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
            f"vqa-extract: {len(missing)} referenced video(s) are missing under {kw['root']}; "
            "recorded as failed"
        )


def _run(kw: dict, root: Path, options, videos, missing: dict):
    """The extraction job and the engine's settings, run; its ``RunSummary``."""
    from extract.engine import (
        BackendError,
        EngineConfig,
        ExtractionJob,
        OutputInUseError,
        ResumeMismatchError,
        run_extraction,
    )
    from extract.manifest import ManifestError
    from pipelines.paths import UnsafePathError

    job = ExtractionJob(
        out_dir=kw["out"],
        feature_set=kw["feature_set"],
        options=options,
        videos=videos,
        root=root,
        missing=missing,
        source={
            "dataset": kw["dataset"], "root": str(root.resolve()), "task": kw["task"], "limit": kw["limit"]
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
        return run_extraction(job, config)
    except (ResumeMismatchError, OutputInUseError, ManifestError, UnsafePathError, BackendError) as err:
        raise click.ClickException(str(err)) from err
