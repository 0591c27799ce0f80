"""``vqa-extract demo-data``: the synthetic demo datasets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo-data")
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
