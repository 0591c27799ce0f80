"""PCA projections of clip features, applied after the backbone (``vqa-extract --pca FILE``).

The ActivityNet challenge released its C3D features as fc7 (4096-d) reduced to 500-d by a PCA, and
released that PCA too, so features of new videos can be made compatible with the release: C3D fc7
(``--motion c3d_sports1m``) followed by the same projection. Two file formats are read, with h5py and
NumPy (nothing is unpickled):

- ``activitynet-hdf5``: ``PCA_activitynet_v1-3.hdf5`` (activity-net.org/challenges/2016/download.html,
  C3D features): a group ``data`` holding ``U`` (D, K), the principal directions in columns, strongest
  first; ``S`` (K,) their singular values; ``x_mean`` (D,) (or (1, D)), the mean feature. Its recipe:
  ``(x - x_mean) @ U[:, :500]`` (DAPs' README documents the same layout and recipe for its THUMOS-14
  file, whose three datasets sit at the file's root; both placements are read).
- ``npz``: ``mean`` (D,) and ``components`` (D, K): the layout of ``vqa-train``'s cached CMIN PCA
  (``RUN/feature_cache/pca-<key>.npz``, fitted on the training split's clips), so a training run's
  projection can be applied at extraction (it projects features as extracted when the run used
  ``train.feature_norm=none`` and ``model.center_clips=false``).

Fitting belongs to training: ``vqa-train cmin`` fits the PCA on the training split's clips
(``model.pca_dim``, 500), caches it and carries it in its checkpoints, which ``vqa-answer`` applies.

A projection file is one of the networks of a feature set (``FeatureOptions.checkpoints`` entry
``"pca"``): its sha256 goes into the provenance like a weight file's, a resumed extraction refuses
another file, and ``vqa-answer`` finds it as ``--backbone pca=FILE`` (or in ``--checkpoint-dir``).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.weights import sha256_file

__all__ = ["DEFAULT_PCA_DIM", "PCA_NAME", "PcaError", "PcaInfo", "Projection", "inspect_pca", "load_pca",
           "pca_provenance"]

PCA_NAME = "pca"  # its name among FeatureOptions.checkpoints and in the provenance
DEFAULT_PCA_DIM = 500  # the ActivityNet release's


class PcaError(ValueError):
    """A projection file that cannot be read or does not fit; the message names the file."""


@dataclass(frozen=True)
class PcaInfo:
    """What a projection file holds: its format, input size D and the number of components K."""

    format: str  # "activitynet-hdf5" | "npz"
    in_dim: int
    max_dim: int


class Projection:
    """``(x - mean) @ components``: (D,) mean, (D, k) components, float32."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(T, D) -> (T, k) float32."""
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components


def _hdf5_arrays(path: Path, *, read: bool):
    import h5py

    with h5py.File(path, "r") as f:
        group = f["data"] if isinstance(f.get("data"), h5py.Group) else f
        where = "data/" if group is not f else ""
        missing = [k for k in ("U", "x_mean") if not isinstance(group.get(k), h5py.Dataset)]
        if missing:
            raise PcaError(
                f"PCA file {path}: no dataset {where}{missing[0]}; expected the ActivityNet layout (group "
                "'data' with U (D, K), S, x_mean (D,)) or an .npz with mean (D,) and components (D, K)"
            )
        if not read:
            return group["U"].shape, group["x_mean"].shape
        return group["U"][()], group["x_mean"][()]


def _npz_arrays(path: Path, *, read: bool):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("mean", "components") if k not in z.files]
            comps, mean = (None, None) if missing else (z["components"], z["mean"])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise PcaError(f"PCA file {path}: not a readable .npz ({type(err).__name__}: {err})") from err
    if missing:
        raise PcaError(f"PCA file {path}: no array {missing[0]!r}; an .npz needs mean (D,) and "
                       "components (D, K)")
    return (comps, mean) if read else (comps.shape, mean.shape)


def _arrays(path: Path, *, read: bool):
    """(U or components, mean) arrays, or their shapes; the format by content, not by name."""
    if not path.is_file():
        raise PcaError(f"PCA file {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "activitynet-hdf5", _hdf5_arrays(path, read=read)
    if head[:2] == b"PK":
        return "npz", _npz_arrays(path, read=read)
    raise PcaError(f"PCA file {path} is neither HDF5 (the ActivityNet PCA_activitynet_v1-3.hdf5 layout) nor "
                   ".npz (mean, components)")


def _check_shapes(path: Path, comps_shape, mean_shape) -> PcaInfo:
    if len(comps_shape) != 2 or int(np.prod(mean_shape)) != comps_shape[0]:
        raise PcaError(f"PCA file {path}: components of shape {tuple(comps_shape)} and mean of shape "
                       f"{tuple(mean_shape)} do not fit; expected (D, K) and (D,)")
    return PcaInfo("", int(comps_shape[0]), int(comps_shape[1]))


def inspect_pca(path: str | os.PathLike, *, in_dim: int | None = None, dim: int | None = None) -> PcaInfo:
    """Read only the shapes of a projection file and check them.

    Args:
        path: the file.
        in_dim: the feature size it must project (the backbone's, e.g. 4096 for C3D fc7).
        dim: the components that will be kept.

    Raises:
        PcaError: unreadable, another format, shapes that do not fit ``in_dim`` or fewer than ``dim``
            components; the one-line message names the file.
    """
    path = Path(path)
    fmt, (comps_shape, mean_shape) = _arrays(path, read=False)
    info = _check_shapes(path, comps_shape, mean_shape)
    if in_dim is not None and info.in_dim != in_dim:
        raise PcaError(f"PCA file {path} projects {info.in_dim}-d features, but the backbone gives "
                       f"{in_dim}-d ones (the ActivityNet PCA takes C3D fc7 or fc6, 4096-d)")
    if dim is not None and dim > info.max_dim:
        raise PcaError(f"PCA file {path} holds {info.max_dim} components; --pca-dim {dim} asks for more")
    return PcaInfo(fmt, info.in_dim, info.max_dim)


def load_pca(path: str | os.PathLike, dim: int) -> Projection:
    """The projection to the first ``dim`` components of ``path``.

    Raises:
        PcaError: as ``inspect_pca``, or non-finite values.
    """
    path = Path(path)
    _, (comps, mean) = _arrays(path, read=True)
    info = _check_shapes(path, comps.shape, mean.shape)
    if dim > info.max_dim:
        raise PcaError(f"PCA file {path} holds {info.max_dim} components; --pca-dim {dim} asks for more")
    comps = np.asarray(comps, dtype=np.float64)[:, :dim]
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    if not (np.isfinite(comps).all() and np.isfinite(mean).all()):
        raise PcaError(f"PCA file {path} holds NaN or infinite values")
    return Projection(mean, comps)


def pca_provenance(path: str | os.PathLike, dim: int) -> dict:
    """The provenance entry of a projection (its file's sha256 as a network's weights)."""
    path = Path(path)
    info = inspect_pca(path, dim=dim)
    return {
        "name": PCA_NAME,
        "kind": "projection",
        "format": info.format,
        "in_dim": info.in_dim,
        "dim": dim,
        "recipe": "(x - mean) @ components[:, :dim]",
        "weights": "checkpoint",
        "weights_file": path.name,
        "weights_sha256": sha256_file(path),
    }
