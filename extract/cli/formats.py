"""Other layouts than ours: ``vqa-extract import`` (feature files released by the papers' authors) and
``export-hcrn`` (HCRN's files)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export-hcrn")
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


@click.command("import", cls=_ImportCommand)
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


