"""The commands that read a feature directory: ``info``, ``verify`` and ``repair``."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("info")
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


@click.command("verify")
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


@click.command("repair")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Replace an existing (e.g. unreadable) manifest.json.")
def repair_cmd(out: Path, force: bool) -> None:
    """Rebuild OUT/manifest.json from the shards' own attributes (after it was deleted or damaged)."""
    from extract.featuredir import rebuild_manifest
    from extract.manifest import MANIFEST_NAME, ManifestError

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
