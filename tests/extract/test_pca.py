"""Projection files (``extract.pca``): the ActivityNet release's HDF5 layout and .npz, applied as the
release's recipe ``(x - x_mean) @ U[:, :k]``; every bad file is one line naming it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from extract.featuresets import FeatureOptions, build_feature_set
from extract.pca import PcaError, inspect_pca, load_pca, pca_provenance

D, K = 24, 10


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.standard_normal((D, K)).astype(np.float32), rng.random(D).astype(np.float32) * 50


def _h5(path, datasets: dict, group: str | None = "data"):
    with h5py.File(path, "w") as f:
        where = f.create_group(group) if group else f
        for name, value in datasets.items():
            where[name] = value
    return path


@pytest.mark.parametrize("layout", ["activitynet", "root", "npz", "row_mean"])
def test_projection_is_the_release_recipe_in_every_layout(tmp_path, arrays, layout):
    u, mean = arrays
    if layout == "npz":  # what vqa-train caches for CMIN's PCA (RUN/feature_cache/pca-<key>.npz)
        path = tmp_path / "pca.npz"
        np.savez(path, mean=mean, components=u)
    else:
        m = mean[None, :] if layout == "row_mean" else mean
        path = _h5(tmp_path / "pca.hdf5", {"U": u, "S": np.ones(K), "x_mean": m},
                   group=None if layout == "root" else "data")
    info = inspect_pca(path, in_dim=D, dim=4)
    assert (info.in_dim, info.max_dim) == (D, K)
    assert info.format == ("npz" if layout == "npz" else "activitynet-hdf5")
    x = np.random.default_rng(1).standard_normal((7, D)).astype(np.float32) * 100
    np.testing.assert_allclose(load_pca(path, 4)(x), (x - mean) @ u[:, :4], rtol=1e-5, atol=1e-3)
    prov = pca_provenance(path, 4)
    assert (prov["name"], prov["dim"], prov["in_dim"], prov["weights_file"]) == ("pca", 4, D, path.name)
    assert len(prov["weights_sha256"]) == 64


def test_bad_files_are_one_line_naming_the_file(tmp_path, arrays):
    u, mean = arrays
    cases = {
        "garbage.hdf5": (lambda p: p.write_bytes(b"neither hdf5 nor zip" * 8), "neither HDF5"),
        "no_u.hdf5": (lambda p: _h5(p, {"S": np.ones(K), "x_mean": mean}), "no dataset data/U"),
        "mean_size.hdf5": (lambda p: _h5(p, {"U": u, "x_mean": mean[:5]}), "do not fit"),
        "no_mean.npz": (lambda p: np.savez(p, components=u), "no array 'mean'"),
        "broken.npz": (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 40), "not a readable .npz"),
        "nan.hdf5": (lambda p: _h5(p, {"U": np.full_like(u, np.nan), "x_mean": mean}), "NaN or infinite"),
    }
    for name, (make, text) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(PcaError) as err:
            load_pca(path, 4)
        message = str(err.value)
        assert str(path) in message and text in message and "\n" not in message, message
    good = _h5(tmp_path / "good.hdf5", {"U": u, "x_mean": mean})
    with pytest.raises(PcaError, match="projects 24-d features, but the backbone gives 512-d"):
        inspect_pca(good, in_dim=512)
    with pytest.raises(PcaError, match="holds 10 components; --pca-dim 11 asks for more"):
        load_pca(good, 11)
    with pytest.raises(PcaError, match="does not exist"):
        inspect_pca(tmp_path / "absent.hdf5")


def test_cmin_options_with_and_without_a_projection(tmp_path, arrays):
    u, mean = arrays
    small = dict(motion="r3d_18", motion_size=16, clip_len=4, weights="random")
    with pytest.raises(ValueError, match="--pca-dim needs a projection file"):
        build_feature_set("cmin", FeatureOptions(**small, pca_dim=4))
    wrong_dim = _h5(tmp_path / "pca24.hdf5", {"U": u, "x_mean": mean})
    with pytest.raises(PcaError, match="but the backbone gives 512-d"):  # r3d_18 gives 512-d clips
        build_feature_set("cmin", FeatureOptions(**small, checkpoints=(("pca", str(wrong_dim)),)))
    rng = np.random.default_rng(2)
    fitting = _h5(tmp_path / "pca512.hdf5", {"U": rng.standard_normal((512, 8)), "x_mean": np.zeros(512)})
    fs = build_feature_set("cmin", FeatureOptions(**small, checkpoints=(("pca", str(fitting)),), pca_dim=8))
    assert fs.outputs["clips"].shape == (None, 8) and fs.options.checkpoints == (("pca", str(fitting)),)
    assert fs.provenance()["projection"]["dim"] == 8
    with pytest.raises(PcaError, match="holds 8 components; --pca-dim 500 asks for more"):  # the default
        build_feature_set("cmin", FeatureOptions(**small, checkpoints=(("pca", str(fitting)),)))
    # every other set ignores the projection: resolution drops it
    sia = build_feature_set("siasamrea", FeatureOptions(appearance="resnet18", weights="random",
                                                         checkpoints=(("pca", str(fitting)),), pca_dim=8))
    assert sia.options.checkpoints == () and sia.options.pca_dim is None


def test_vqa_answer_finds_the_projection_file_by_its_sha256(tmp_path, arrays):
    """A checkpoint's features made with --pca are rebuilt with the same file, found by name or given."""
    from extract.rebuild import (
        BackboneMismatchError,
        RebuildError,
        rebuild_feature_set,
        resolve_backbone_files,
    )

    rng = np.random.default_rng(3)
    u512 = {"U": rng.standard_normal((512, 8)), "x_mean": np.zeros(512)}
    pca = _h5(tmp_path / "PCA_activitynet_v1-3.hdf5", u512)
    small = dict(motion="r3d_18", motion_size=16, clip_len=4, weights="random", pca_dim=8)
    prov = build_feature_set("cmin", FeatureOptions(**small, checkpoints=(("pca", str(pca)),))).provenance()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / pca.name).write_bytes(pca.read_bytes())
    files = resolve_backbone_files(prov, checkpoint_dir=moved)  # by the recorded file name
    assert files == (("pca", str(moved / pca.name)),)
    fs = rebuild_feature_set(prov, files=files, device="cpu", seed=0)
    assert fs.outputs["clips"].shape == (None, 8)
    assert fs.options.checkpoint_for("pca") == str(moved / pca.name)
    with pytest.raises(RebuildError, match="--backbone pca=PATH"):
        resolve_backbone_files(prov)
    other = _h5(tmp_path / "other.hdf5", {"U": rng.standard_normal((512, 8)), "x_mean": np.zeros(512)})
    with pytest.raises(BackboneMismatchError, match="other.hdf5: sha256"):
        resolve_backbone_files(prov, backbones={"pca": other})
