"""``vqa-extract`` command-line conventions: Ray on one CPU finishes (no hang) quietly, offline and on
loopback only, huge frames are a recorded failure, user errors are one line naming the file (exit 1, no
traceback), Ctrl-C -> 130, ``-h`` on every subcommand, ``--threads``, progress bars only on a terminal,
the masn 1x1 conv5 warning."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import extract.engine as engine
from extract.featuresets import FeatureOptions, build_feature_set
from extract.masn import conv5_side
from extract.video import Video, VideoDecodeError

SMALL = [
    "--features", "mspan", "--appearance", "resnet18", "--motion", "r3d_18", "--image-size", "32",
    "--motion-size", "32", "--num-frames", "2", "--clip-len", "2", "--weights", "random", "--device", "cpu",
    "--batch-frames", "8",
]  # fmt: skip


def _main(args, capsys):
    """Run the console entry point in-process: (exit status, stdout, stderr)."""
    from extract.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _clean_error(code, err, *needles):
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("!!")]
    assert lines[-1].startswith("vqa-extract: error: ") or lines[-1].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[-1], (needle, err)


def huge_gif(path: Path, side: int = 12000) -> Path:
    """A ~70-byte GIF whose header declares a ``side`` x ``side`` canvas (two 1x1 frames)."""
    data = b"GIF89a" + struct.pack("<HH", side, side) + bytes([0x80, 0, 0, 0, 0, 0, 255, 255, 255])
    for _ in range(2):
        data += bytes([0x21, 0xF9, 4, 0, 10, 0, 0, 0]) + b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\0"
        data += bytes([2, 2, 0x4C, 0x01, 0])
    path.write_bytes(data + b";")
    return path


@pytest.fixture()
def small_root(tmp_path, video_tree) -> Path:
    root = tmp_path / "videos"
    for rel in ("a/x.mp4", "c/sub/y.gif"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((video_tree / rel).read_bytes())
    return root


def _tcp_listeners() -> dict[int, str]:
    """Socket inode -> local address of every listening TCP socket (IPv4 and IPv6) from /proc/net."""
    found = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                host = bytes.fromhex(fields[1].split(":")[0])
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(host[i : i + 4][::-1] for i in range(0, width, 4))
                address = ipaddress.ip_address(raw)
                found[int(fields[9])] = str(getattr(address, "ipv4_mapped", None) or address)
    return found


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, stack = set(), [pid]
    while stack:
        proc = stack.pop()
        out.add(proc)
        stack.extend(children.get(proc, []))
    return out


def _listening(pid: int) -> set[tuple[str, str]]:
    """(process name, local address) of every listening TCP socket held by ``pid`` or its descendants."""
    listeners, seen = _tcp_listeners(), set()
    for proc in _tree(pid):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{proc}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{proc}/fd"):
                target = os.readlink(f"/proc/{proc}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in listeners:
                    seen.add((name, listeners[int(target[8:-1])]))
    return seen


@pytest.mark.slow
def test_ray_on_one_cpu_finishes_quietly_on_loopback(small_root, tmp_path):
    """The inference actor must not take the only CPU (decode tasks would wait forever); the local runtime
    listens on 127.0.0.1 only and prints no start-up notice the user cannot act on."""
    if not (os.path.exists("/proc/net/tcp") and os.path.isdir(f"/proc/{os.getpid()}/fd")):
        pytest.skip("this platform does not list sockets in /proc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "OMP_WAIT_POLICY"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "extract.cli", "--root", str(small_root), "--out", str(tmp_path / "o"),
           "--num-cpus", "1", *SMALL]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 300  # a hang fails here
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _listening(proc.pid)  # sampled while the run goes on: workers come and go
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "2 done, 0 failed" in stdout and "1 decode CPU(s)" in stdout, stdout
    assert "Traceback" not in stderr
    for noise in ("Token authentication", "usage stats", "Usage stats"):  # start-up notices, not actionable
        assert noise not in stderr, stderr[-3000:]
    names = {name for name, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the runtime's own servers were seen listening
    exposed = {(name, host) for name, host in seen if not ipaddress.ip_address(host).is_loopback}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"


def test_ray_defaults_telemetry_off_unless_the_user_opts_in(monkeypatch):
    from extract.engine import ray_backend
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    ray_backend.quiet_ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    ray_backend.quiet_ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_local_runtime_loopback_switch_is_undone_and_the_users_choice_wins(monkeypatch):
    from ray._private import ray_constants

    from extract.engine import ray_backend

    monkeypatch.delenv(ray_backend.LOOPBACK_ENV, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    undo = ray_backend.loopback_only()
    assert os.environ[ray_backend.LOOPBACK_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    undo()  # a later --address join in this process must advertise a reachable address
    assert ray_backend.LOOPBACK_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before
    monkeypatch.setenv(ray_backend.LOOPBACK_ENV, "1")
    ray_backend.loopback_only()()
    assert os.environ[ray_backend.LOOPBACK_ENV] == "1" and ray_constants.ENABLE_RAY_CLUSTER == before


def test_cpu_actors_sleep_at_openmp_barriers_unless_the_user_says_otherwise(monkeypatch):
    from extract.engine import ray_backend

    cpu, gpu = engine.ActorPlacement("n", 1.0, 0, 2), engine.ActorPlacement("n", 1.0, 1, None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env_vars = {"OMP_WAIT_POLICY": "passive"}
    assert ray_backend.actor_runtime_env(cpu, "passive") == {"runtime_env": {"env_vars": env_vars}}
    assert ray_backend.actor_runtime_env(gpu, "passive") == {}
    assert ray_backend.actor_runtime_env(cpu, None) == {}
    assert engine.EngineConfig().omp_wait_policy == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    env_vars = ray_backend.actor_runtime_env(cpu, "passive")["runtime_env"]["env_vars"]
    assert env_vars == {"OMP_WAIT_POLICY": "active"}


def test_huge_frames_are_refused_before_decoding_and_recorded(small_root, tmp_path, capsys):
    big = huge_gif(small_root / "big.gif")
    with pytest.raises(VideoDecodeError, match=r"12000x12000 \(144000000 pixels\) exceed the limit"):
        Video(big)
    code, out, err = _main(["--root", str(small_root), "--out", str(tmp_path / "o"), "--local",
                            "--no-progress", *SMALL], capsys)
    assert code == 3, err  # some videos failed, the others are written
    assert "2 done, 1 failed" in out and "big: frames of 12000x12000" in out
    from extract.manifest import load_manifest

    (failure,) = load_manifest(tmp_path / "o")["failures"]
    assert failure["video_id"] == "big" and "--max-pixels" in failure["reason"]
    # a lower limit refuses the normal videos too; the limit is not part of the resume comparison
    code, out, err = _main(["--root", str(small_root), "--out", str(tmp_path / "o2"), "--local",
                            "--no-progress", "--max-pixels", "100", *SMALL], capsys)
    assert code == 3 and "0 done, 3 failed" in out, out + err


def test_masn_warns_when_the_conv5_map_is_1x1():
    import torch
    import torchvision

    trunk = torch.nn.Sequential(*list(torchvision.models.resnet18().eval().children())[:-2])
    for side in (16, 32, 33, 64, 224):
        assert conv5_side(side) == trunk(torch.zeros(1, 3, side, side)).shape[-1]
    small = build_feature_set("masn", FeatureOptions(weights="random", image_size=32))
    (warning,) = small.warnings()
    assert "conv5 map is 1x1" in warning and "object row equals the appearance row" in warning
    assert build_feature_set("masn", FeatureOptions(weights="random", image_size=64)).warnings() == []
    assert build_feature_set("mspan", FeatureOptions(weights="random")).warnings() == []


def test_a_file_name_that_is_not_utf8_is_one_line(small_root, tmp_path, capsys):
    with open(os.path.join(os.fsencode(small_root), b"caf\xe9.mp4"), "wb") as fh:
        fh.write((small_root / "a" / "x.mp4").read_bytes())
    code, _, err = _main(["--root", str(small_root), "--out", str(tmp_path / "o"), "--local", *SMALL],
                         capsys)
    _clean_error(code, err, "caf\\xe9.mp4", "not valid UTF-8", "rename")


def test_unusable_output_directory_is_one_line(small_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _main(["--root", str(small_root), "--out", str(blocker / "o"), "--local", *SMALL],
                         capsys)
    _clean_error(code, err, str(blocker / "o"))


def test_ctrl_c_exits_130_with_a_resume_hint(small_root, tmp_path, capsys, monkeypatch):
    def interrupted(job, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_extraction", interrupted)
    code, _, err = _main(["--root", str(small_root), "--out", str(tmp_path / "o"), "--local", *SMALL],
                         capsys)
    assert code == 130 and "interrupted; re-run the same command to resume" in err
    assert "Traceback" not in err


def test_progress_follows_the_terminal_and_threads_reach_the_engine(small_root, tmp_path, capsys,
                                                                    monkeypatch):
    seen = []

    def capture(job, config):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_extraction", capture)
    base = ["--root", str(small_root), "--out", str(tmp_path / "o"), *SMALL]
    _main([*base, "--threads", "3"], capsys)  # captured stderr is not a terminal
    _main([*base, "--progress"], capsys)
    assert (seen[0].progress, seen[0].threads) == (False, 3)
    assert seen[1].progress is True


def test_threads_are_reported_in_the_summary(small_root, tmp_path, capsys):
    code, out, err = _main(["--root", str(small_root), "--out", str(tmp_path / "o"), "--local",
                            "--threads", "1", *SMALL], capsys)
    assert code == 0, err
    assert "1 torch threads" in out


@pytest.mark.parametrize("argv", [["-h"], ["info", "-h"], ["demo-data", "-h"], ["export-hcrn", "-h"],
                                  ["import", "-h"]])
def test_h_works_everywhere(argv, capsys):
    code, out, _ = _main(argv, capsys)
    assert code == 0 and "Usage:" in out


def test_local_runtime_never_joins_another_ray_on_the_machine(monkeypatch):
    """Without --address, vqa-extract starts its own runtime: a `ray start` cluster or another user's run on
    the same machine (which ray.init() without an address joins, failing on --num-cpus) is not joined."""
    import ray
    from ray._private import services

    from extract.engine import ray_backend

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir=None: "127.0.0.1:6379")
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: ["127.0.0.1:6379"])
    seen: dict = {}
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    backend = object.__new__(ray_backend.RayBackend)
    backend._start_runtime(engine.EngineConfig(address=None, num_cpus=2))
    backend._undo_loopback()
    assert seen["num_cpus"] == 2
    assert services.canonicalize_bootstrap_address(seen.get("address")) is None  # Ray starts a new runtime


def test_ray_address_from_the_environment_joins_that_cluster(small_root, tmp_path, capsys, monkeypatch):
    """RAY_ADDRESS (what `ray job submit` sets for its entrypoint) is --address; --address wins over it."""
    seen = []

    def capture(job, config):
        seen.append(config.address)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_extraction", capture)
    base = ["--root", str(small_root), "--out", str(tmp_path / "o"), *SMALL]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _main(base, capsys)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    _main(base, capsys)
    _main([*base, "--address", "auto"], capsys)
    assert seen == [None, "10.0.0.5:6379", "auto"]


def test_an_unreachable_cluster_address_is_one_line_not_an_endless_retry(monkeypatch):
    """Ray retries a cluster address nobody answers at without end; vqa-extract says so at once."""
    import socket

    import ray

    from extract.engine import ray_backend

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    called = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: called.append(kwargs))
    backend = object.__new__(ray_backend.RayBackend)
    backend._undo_loopback = lambda: None
    for address, expected in ((f"127.0.0.1:{port}", "nothing answers there"), ("head-node", "HOST:PORT")):
        with pytest.raises(engine.BackendError, match=expected) as err:
            backend._start_runtime(engine.EngineConfig(address=address))
        assert address in str(err.value) and "\n" not in str(err.value)
    assert not called
