"""Throughput of MASN's object path: detector, and detector + conv5 map + RoIAlign, in images/s.

Run by hand (not a test):

    OMP_NUM_THREADS=2 python benchmarks/objects_bench.py --threads 2
    python benchmarks/objects_bench.py --device cuda --detectors fasterrcnn_resnet50_fpn_v2 --sizes 600
    python benchmarks/objects_bench.py --detectors bottomup_r101_vg --num-proposals 300 --batch 1 --repeats 1

For every detector and frame size it times, on batches of ``--batch`` 4:3 frames:

- ``detect``: ``LoadedDetector.detect`` (resize to the detector's min_size, backbone, RPN, box head,
  per-class NMS) plus the class-agnostic top-10 selection;
- ``detect+roi``: the above plus the appearance backbone's conv5 map of the frames (224x224) and
  RoIAlign + mean pooling of the 10 boxes: the per-frame object cost of the ``masn`` feature set
  (without the I3D motion path).

Weights are random unless the torchvision cache holds the COCO files (``--weights pretrained``). With
random weights the detector keeps no box above its 0.05 candidate floor, so its NMS does less work than a
trained detector's (a small part of the time next to the convolutions). ``bottomup_r101_vg`` (bottom-up
attention's own Visual Genome network, ``extract/bottomup.py``) runs its whole extraction rule whatever
the weights (per-class NMS over all 1600 classes, 10 regions kept); its ``detect`` row is the figure that
matters (the ``masn`` set uses its region features, not the RoIAlign of ``detect+roi``), with
``--num-proposals 300`` as the ``masn`` set and the released config. The public bottom-up-attention tools
report 3 to 6.5 images/s per GPU for it (600 px shorter side, ResNet-101 C4).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _frames(n: int, short: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = short, (short * 4) // 3
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def bench(
    detector: str, size: int, *, batch: int, repeats: int, device: str, weights: str, appearance: str,
    num_proposals: int | None = None,
) -> dict:  # fmt: skip
    from extract.backbones import build_backbone
    from extract.masn import squash_frames
    from extract.objects import DetectorSettings, load_detector
    from extract.regions import roi_mean_features, scale_boxes, select_batch

    extra = {} if num_proposals is None else {"num_proposals": num_proposals}
    settings = DetectorSettings(name=detector, min_size=size, max_size=max(size, (size * 5) // 3), **extra)
    det = load_detector(settings, weights=weights, device=device)
    backbone = build_backbone(appearance, weights=weights, device=device)
    frames = _frames(batch, size)
    frame_hw = frames[0].shape[:2]

    def detect_only():
        return select_batch(det.detect(frames, batch_size=batch), settings)

    def detect_roi():
        sel = detect_only()
        squashed = squash_frames(np.stack(frames), 224)  # whole frames, (B, 224, 224, 3)
        fmap = backbone.feature_map(backbone.preprocess(squashed, 224))  # (B, D, 7, 7)
        boxes = torch.from_numpy(scale_boxes(sel.boxes, frame_hw, tuple(fmap.shape[-2:]))).to(fmap.device)
        feats = roi_mean_features(fmap, boxes, torch.from_numpy(sel.mask).to(fmap.device))
        return feats.cpu()

    out = {"detector": detector, "short_side": size, "batch": batch, "device": device, "weights": weights,
           "proposals": settings.num_proposals}  # fmt: skip
    for label, fn in (("detect", detect_only), ("detect+roi", detect_roi)):
        fn()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[f"{label} images/s"] = round(batch * repeats / (time.perf_counter() - t0), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--detectors", nargs="+", default=["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 600], help="frame shorter sides (4:3)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="random", choices=["random", "pretrained"])
    parser.add_argument("--appearance", default="resnet152")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--num-proposals", type=int, default=None, help="RPN proposals [DetectorSettings']")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    for detector in args.detectors:
        for size in args.sizes:
            result = bench(
                detector,
                size,
                batch=args.batch,
                repeats=args.repeats,
                device=args.device,
                weights=args.weights,
                appearance=args.appearance,
                num_proposals=args.num_proposals,
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
