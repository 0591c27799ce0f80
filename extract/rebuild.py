"""A feature set rebuilt from its provenance record, to recompute a trained model's features for a new video.

A feature directory's provenance (``manifest.json``, recorded again in every checkpoint trained on it)
names the feature set, its resolved options and each network with its weight file and sha256 (or
``"random"``). :func:`rebuild_feature_set` turns that record back into the :class:`FeatureSet` that made
the features (``vqa-answer`` runs it on new videos): :func:`resolve_backbone_files` finds each pretrained
network's weight file and refuses one whose sha256 differs; random-weight networks are rebuilt from the
recorded seed (:data:`extract.backbones.RANDOM_SEED`), so the features come out bit for bit the same.
Imported (released) features record no backbone: :func:`recompute_provenance` takes a directory
``vqa-extract`` made whose extraction stands in for them (``--features-like``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from extract.backbones import RANDOM_SEED, resolve_weights
from extract.featuresets import FeatureOptions, FeatureSet, build_feature_set
from extract.manifest import ManifestError, load_manifest
from extract.weights import WeightsError, sha256_file

__all__ = [
    "BackboneMismatchError",
    "ImportedFeaturesError",
    "RebuildError",
    "UnrecordedOptionsError",
    "backbone_records",
    "rebuild_feature_set",
    "recompute_provenance",
    "resolve_backbone_files",
]


class RebuildError(RuntimeError):
    """A provenance record that cannot be rebuilt into its feature set; the message says what to do."""


class BackboneMismatchError(RebuildError):
    """A backbone weight file whose sha256 is not the one the features were extracted with."""


class ImportedFeaturesError(RebuildError):
    """The features were imported (released), so no backbone is recorded to recompute them."""


class UnrecordedOptionsError(RebuildError):
    """A provenance record from before feature-set options were recorded."""


def backbone_records(feature_prov: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Network name -> its provenance entry (backbones of every role, plus e.g. a detector)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if "name" in node and "weights_sha256" in node:
                found[str(node["name"])] = dict(node)
                return
            for value in node.values():
                walk(value)

    walk(feature_prov.get("backbones", {}))
    walk({k: v for k, v in feature_prov.items() if k != "backbones"})
    return found


def resolve_backbone_files(
    feature_prov: Mapping[str, Any],
    *,
    backbones: Mapping[str, str | Path] | None = None,
    checkpoint_dir: str | Path | None = None,
    source: str = "the checkpoint",
) -> tuple[tuple[str, str], ...]:
    """The ``(network, weight file)`` pairs that reproduce the recorded pretrained backbones.

    Each network with recorded pretrained weights takes ``backbones[name]``, else
    ``checkpoint_dir / <recorded file name>``, else the file ``vqa-extract`` would find (torch cache).
    Its sha256 must equal the recorded one. Random-weight networks take no file.

    Raises:
        BackboneMismatchError: a file with another sha256 (the message names both hashes).
        RebuildError: no file found, or ``backbones`` names a network the features do not use.
    """
    records = backbone_records(feature_prov)
    given = {k: Path(v) for k, v in (backbones or {}).items()}
    unknown = sorted(set(given) - set(records))
    if unknown:
        raise RebuildError(
            f"--backbone {unknown[0]}: the features of {source} use no network of that name "
            f"(they use {', '.join(sorted(records))})"
        )
    pairs = []
    for name, rec in sorted(records.items()):
        sha = rec["weights_sha256"]
        if sha == "random":
            if name in given:
                raise RebuildError(
                    f"--backbone {name}: {source} was trained on features from RANDOM {name} "
                    "weights; drop the option (they are rebuilt from the recorded seed)"
                )
            continue
        path = given.get(name)
        if path is None and checkpoint_dir is not None and rec.get("weights_file"):
            candidate = Path(checkpoint_dir) / rec["weights_file"]
            path = candidate if candidate.is_file() else None
        if path is None:
            try:
                path, _ = resolve_weights(name, weights="pretrained")
            except (WeightsError, KeyError, ValueError):
                path = None
        if path is None or not path.is_file():
            raise RebuildError(
                f"the features of {source} were extracted with {name} weights {rec.get('weights_file')} "
                f"(sha256 {sha}); give that file with --backbone {name}=PATH or --checkpoint-dir DIR"
                + (f" (not found: {path})" if path is not None else "")
            )
        actual = sha256_file(path)
        if actual != sha:
            raise BackboneMismatchError(
                f"{path}: sha256 {actual} is not the {name} weights the features of {source} were "
                f"extracted with (sha256 {sha}, file {rec.get('weights_file')}); give that exact file"
            )
        pairs.append((name, str(path)))
    return tuple(pairs)




def recompute_provenance(trained: Mapping[str, Any], features_like: str | Path | None, *, source: str
                         ) -> tuple[Mapping[str, Any], str | None]:
    """The feature provenance new videos are extracted by, and a note when it is not the training one's.

    A model trained on features this toolkit extracted recomputes them as recorded. A model trained on
    imported features (``vqa-extract import``: released by the authors, no backbone recorded) needs
    ``features_like``: a feature directory ``vqa-extract`` made whose backbones the user vouches reproduce
    the released features (e.g. ``--features cmin --motion c3d_sports1m`` for the ActivityNet C3D
    release, docs/reproduce.md). It must be an extraction of the same feature set with the same feature
    sizes; its backbones' weight files are then resolved and sha256-checked as usual.

    Raises:
        ImportedFeaturesError: imported features and no ``features_like`` (one line saying what to do).
        RebuildError: ``features_like`` unreadable, itself imported, or of another set or other sizes.
    """
    imported = trained.get("imported")
    if not imported:
        if features_like is not None:
            raise RebuildError(f"--features-like: {source} was trained on features this toolkit extracted; "
                               "they are recomputed as recorded, drop the option")
        return trained, None
    files = ", ".join(r.get("file") or str(r.get("directory")) for r in imported.get("files", {}).values())
    if features_like is None:
        raise ImportedFeaturesError(
            f"{source}: trained on features imported from {imported.get('format')} ({files}; "
            f"{imported.get('features')}), which vqa-answer cannot recompute for a new video; pass "
            "--features-like DIR, a feature directory vqa-extract made with backbones that reproduce them "
            "(docs/reproduce.md), or evaluate on imported features with vqa-train --eval-only")
    like = extraction_like(Path(features_like), trained)
    nets = ", ".join(f"{r}={b.get('name')}" for r, b in sorted(like.get("backbones", {}).items()))
    return like, (f"features recomputed as {features_like} was extracted ({nets}), standing in for the "
                  f"{imported.get('format')} features the model was trained on")


def extraction_like(directory: Path, trained: Mapping[str, Any]) -> Mapping[str, Any]:
    """The provenance of the extraction in ``directory``, checked against the features a model trained on."""
    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        raise RebuildError(f"--features-like: {exc}") from None
    like = manifest.get("provenance", {})
    if like.get("imported"):
        raise RebuildError(f"--features-like {directory}: imported features too; give a directory "
                           "vqa-extract extracted, whose backbones can run on a new video")
    if manifest["feature_set"] != trained.get("feature_set"):
        raise RebuildError(f"--features-like {directory}: feature set {manifest['feature_set']!r}, but the "
                           f"model was trained on {trained.get('feature_set')!r} features")
    want = {k: v.get("shape") for k, v in (trained.get("outputs") or {}).items()}
    got = {k: v.get("shape") for k, v in manifest["outputs"].items()}
    if want != got:
        raise RebuildError(f"--features-like {directory}: outputs {got} differ from the {want} the model was "
                           "trained on (a backbone of another size, or another PCA)")
    return like


def rebuild_feature_set(
    feature_prov: Mapping[str, Any], *, files: tuple[tuple[str, str], ...], device: str, seed: int
) -> FeatureSet:
    """The recorded feature set with its resolved options (precision included), the given weight files and
    ``device``.

    Raises:
        UnrecordedOptionsError: the record holds no options (written before they were recorded).
        RebuildError: the record names an unknown set, or random weights from another seed than this
            toolkit's (they could not be reproduced).
    """
    options = dict(feature_prov.get("options") or {})
    name = feature_prov.get("feature_set")
    if not options or not name:
        raise UnrecordedOptionsError(
            "the checkpoint's feature provenance records no feature set options; "
            "retrain on features extracted with this toolkit"
        )
    if options.get("weights") == "random" and int(seed) != RANDOM_SEED:
        raise RebuildError(
            f"the features were made with random backbone weights from seed {seed}, but this "
            f"toolkit initialises random backbones from seed {RANDOM_SEED}: cannot reproduce them"
        )
    options["checkpoints"] = files
    # the precision the features were extracted in (older records: bf16 autocast ran on CUDA only)
    on_cuda = str(options.get("device", "cpu")).startswith("cuda")
    options.setdefault("precision", "bf16" if on_cuda else "fp32")
    options["device"] = device
    known = set(FeatureOptions.__dataclass_fields__)
    try:
        fs = build_feature_set(name, FeatureOptions(**{k: v for k, v in options.items() if k in known}))
        older = {k: v for k, v in fs.legacy_options().items()  # recorded before the option existed
                 if k not in options and getattr(fs.options, k) != v}
        if older:
            fs = build_feature_set(name, replace(fs.options, **older))
        return fs
    except (KeyError, ValueError) as exc:
        raise RebuildError(f"cannot rebuild feature set {name!r} from the checkpoint: {exc}") from exc


