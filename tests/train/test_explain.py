"""--explain views per model (train/tools/explain.py) on synthetic answers: no model, no video."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from models import MODELS
from train.recipes import RECIPES, get_recipe
from train.tools.answer import Answer
from train.tools.explain import (
    LABEL_W,
    PAD,
    TILE,
    TIMELINE_WIDTH,
    VIEWS,
    anchor_frame_weights,
    draw_boxes,
    render_explanation,
    timeline,
)

RED = np.array([220, 40, 40])


def _red(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of the 'most attended' colour."""
    return (np.abs(img[..., :3].astype(int) - RED) <= 2).all(-1)


def _answerer(model: str) -> SimpleNamespace:
    return SimpleNamespace(meta={"model_name": model, "dataset": "demo", "task": None}, random_weights=True)


def _masn_answer(task_type: str = "open") -> Answer:
    frames = np.full((3, 32, 32, 3), 128, np.uint8)
    boxes = np.zeros((3, 2, 6), np.float32)
    boxes[:, 0, :4] = [0.0, 0.0, 0.4, 0.4]  # top-left object
    boxes[:, 1, :4] = [0.6, 0.6, 1.0, 1.0]  # bottom-right object
    att = np.tile(np.array([[0.2, 0.8]]), (3, 1))  # (T, M): the bottom-right one
    if task_type == "mc":  # (C, T, M): candidate 1 (the best) attends to the top-left one
        att = np.stack([att, att[:, ::-1]])
    res = Answer("v.mp4", "what is it ?", task_type, frames=frames)
    res.features = {"object_boxes": boxes, "object_mask": np.ones((3, 2), bool)}
    res.attention = {"appearance_attention": att}
    res.answers = [("dog", 0.9)] if task_type == "open" else [("b", 2.0), ("a", 1.0)]
    res.candidate_index = [] if task_type == "open" else [1, 0]
    return res


def test_every_model_names_a_view_that_exists():
    views = {name: RECIPES[name].explain.view for name in MODELS}
    assert views == {"mspan": "frame_attention", "masn": "object_boxes", "siasamrea": "clip_frames",
                     "cmin": "timeline"}
    assert set(views.values()) <= set(VIEWS)


def test_draw_boxes_outlines_the_most_attended_box_in_red():
    frame = np.full((32, 32, 3), 128, np.uint8)
    boxes = np.array([[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]])
    out = draw_boxes(frame, boxes, np.array([0.2, 0.8]))
    assert out.shape == (TILE, TILE, 3)
    red = _red(out)
    half = TILE // 2
    assert red[half:, half:].sum() > 50  # the attended (bottom-right) box
    assert red[:half, :half].sum() == 0  # the other one is drawn, but not in red
    assert not _red(draw_boxes(frame, boxes, np.zeros(2))).any()  # masked objects are not drawn


def test_draw_boxes_names_bottom_up_objects():
    frame = np.full((64, 64, 3), 128, np.uint8)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0]])
    plain = draw_boxes(frame, boxes, np.array([1.0])).astype(int)
    named = draw_boxes(frame, boxes, np.array([1.0]), names=["white shirt"]).astype(int)
    text = np.abs(named - 128).sum(-1) > 60  # ink inside the box, text of the label
    assert text.sum() > (np.abs(plain - 128).sum(-1) > 60).sum() + 30  # the name is written before the weight
    assert (draw_boxes(frame, boxes, np.array([1.0]), names=[""]) == plain).all()  # no name: as before


def test_masn_figure_names_objects_when_the_answer_has_names():
    res = _masn_answer()
    res.object_names = np.array([["red car", "white shirt"]] * 3, dtype=object)
    explain = get_recipe("masn").explain
    plain, plain_caption = VIEWS[explain.view](_masn_answer(), explain)
    named, caption = VIEWS[explain.view](res, explain)
    assert np.asarray(named).shape == np.asarray(plain).shape
    assert (np.asarray(named) != np.asarray(plain)).any(-1).sum() > 30  # the boxes' labels carry the names
    assert "Visual Genome" in caption and "Visual Genome" not in plain_caption


def test_masn_figure_draws_the_top_box_of_the_predicted_candidate(tmp_path):
    for task_type, corner in (("open", "bottom-right"), ("mc", "top-left")):
        out = render_explanation(_masn_answer(task_type), _answerer("masn"), tmp_path / f"{task_type}.png")
        img = np.asarray(Image.open(out).convert("RGB"))
        strip_red = _red(img)
        ys, xs = np.nonzero(strip_red[120:])  # below the header text (which uses the accent colour)
        assert len(xs) > 50
        # the first tile starts at x = 8: its red box lies in the corner of the attended object
        first = xs < 8 + TILE
        cx = xs[first].mean() - 8
        assert (cx > TILE / 2) == (corner == "bottom-right"), (task_type, cx)


def test_siasamrea_weights_land_on_the_anchor_frames(tmp_path):
    frames = np.full((6, 16, 16, 3), 200, np.uint8)
    res = Answer("v.mp4", "why ?", "open", frames=frames, answers=[("x", 1.0)])
    res.attention = {
        "frame_attention": np.array([0.1, 0.6, 0.3]),
        "frame_index": np.array([1, 3, 5]),
        "frame_valid": np.array([True, True, False]),  # the padded third row is ignored
    }
    w = anchor_frame_weights(res)
    np.testing.assert_allclose(w, [0, 1 / 7, 0, 6 / 7, 0, 0])
    out = render_explanation(res, _answerer("siasamrea"), tmp_path / "s.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    # frames 0, 2, 4, 5 (weight 0) are dimmed to a quarter; frame 3 (the most attended) is not
    cell = TILE + 8
    row_y = int(np.nonzero((img == 200).all(-1).sum(1) >= TILE // 2)[0][TILE // 2])  # mid-strip row
    levels = [int(img[row_y, 8 + i * cell + TILE // 2, 0]) for i in range(6)]
    assert levels[3] == 200 and levels[0] == levels[2] == levels[4] == levels[5] == 50, levels
    assert levels[1] == round(200 * (0.25 + 0.75 / 6)), levels
    assert anchor_frame_weights(Answer("v", "q", "open", frames=frames)) is None  # no attention: none


def _real_answer(model_name: str, task: str, eval_clips: int = 1) -> tuple[Answer, dict]:
    """A tiny real model's forward on one synthetic sample, its attention taken as vqa-answer takes it."""
    import torch

    from train.tools.answer import named_attention

    g = torch.Generator().manual_seed(0)
    q = {
        "question": torch.randint(1, 20, (1, 5), generator=g),
        "question_len": torch.tensor([5]),
        "candidates": torch.randint(1, 20, (1, 3, 2), generator=g),
        "candidates_len": torch.tensor([[2, 2, 1]]),
    }
    torch.manual_seed(0)
    if model_name == "masn":
        from models.masn import MASNConfig, masn

        cfg = MASNConfig(
            num_frames=4,
            appearance_dim=6,
            motion_dim=5,
            hidden_dim=16,
            word_dim=8,
            position_dim=4,
            glimpses=2,
            ban_rank=2,
        )
        t, m = 4, 3
        boxes = torch.rand(1, t, m, 6, generator=g)
        batch = {
            "appearance": torch.randn(1, t, 6, generator=g),
            "motion": torch.randn(1, t, 5, generator=g),
            "objects": torch.randn(1, t, m, 6, generator=g),
            "object_boxes": boxes,
            "motion_objects": torch.randn(1, t, m, 5, generator=g),
            "frame_mask": torch.ones(1, t, dtype=torch.bool),
            "object_mask": torch.ones(1, t, m, dtype=torch.bool),
            **q,
        }
        model = masn(cfg, vocab_size=20, num_answers=5, task_type=task).eval()
        features = {"object_boxes": boxes[0].numpy(), "object_mask": np.ones((t, m), bool)}
    else:
        from models.siasamrea import SiaSamReaConfig, siasamrea

        cfg = SiaSamReaConfig(
            frames_dim=8,
            hidden_dim=16,
            num_heads=2,
            num_layers=1,
            word_dim=8,
            clip_frames=4,
            frame_interval=2,
            siamese_shift=2,
            num_siamese=3,
            affinity_dim=8,
            eval_clips=eval_clips,
        )
        t = 10
        batch = {
            "frames": torch.randn(1, t, 8, generator=g),
            "frames_mask": torch.ones(1, t, dtype=torch.bool),
            "frame_times": torch.arange(t)[None].float() / 4,
            **q,
        }
        model = siasamrea(cfg, vocab_size=20, num_answers=5, task_type=task).eval()
        features = {}
    with torch.no_grad():
        out = model(batch)
    res = Answer("v.mp4", "what ?", task, frames=np.full((t, 16, 16, 3), 150, np.uint8), features=features)
    res.attention = named_attention(out)
    if task == "mc":
        scores = out["scores"][0]
        res.candidate_index = torch.argsort(scores, descending=True).tolist()
        res.answers = [("abc"[i], float(scores[i])) for i in res.candidate_index]
    else:
        res.answers = [("x", 1.0)]
    return res, out


@pytest.mark.parametrize("task", ["open", "mc"])
def test_real_masn_and_siasamrea_outputs_make_figures(task, tmp_path):
    res, out = _real_answer("masn", task)
    att = res.attention["appearance_attention"]
    assert att.shape[-2:] == (4, 3)
    render_explanation(res, _answerer("masn"), tmp_path / "m.png")
    img = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    assert _red(img[120:]).sum() > 4 * 20  # a red (top) box on each of the 4 frames

    res, out = _real_answer("siasamrea", task)
    w = anchor_frame_weights(res)
    index = res.attention["frame_index"].astype(int)
    assert w is not None and w.shape == (10,) and abs(w.sum() - 1) < 1e-6
    assert (w[np.setdiff1d(np.arange(10), index)] == 0).all()  # only the anchor clip's frames
    assert (w[index] > 0).all()
    render_explanation(res, _answerer("siasamrea"), tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size[0] >= 640

    res, out = _real_answer("siasamrea", task, eval_clips=3)  # multi-clip evaluation: 3 clips of 4 frames
    index = res.attention["frame_index"].astype(int)
    assert index.shape == (12,) and index.min() == 0 and index.max() == 9  # from the first to the last frame
    w = anchor_frame_weights(res)
    assert abs(w.sum() - 1) < 1e-6 and (w[index] > 0).all()
    assert (w[np.setdiff1d(np.arange(10), index)] == 0).all()


def _cmin_answer() -> Answer:
    """A 20 s video, 10 steps of 2 s, widths 2 and 4 steps; the windows around step 6 score highest."""
    from models.cmin import window_layout

    windows = window_layout(10, (2, 4)).numpy()  # (20, 2) step-major
    centre = windows.mean(1)
    scores = -np.abs(centre - 6.5)  # peak at step 6 = 12-14 s
    valid = (windows[:, 0] >= 0) & (windows[:, 1] <= 10)
    cover = [valid & (windows[:, 0] <= t + 0.5) & (t + 0.5 < windows[:, 1]) for t in range(10)]
    step = np.array([scores[c].max(initial=-np.inf) for c in cover])  # as models.cmin.step_relevance
    res = Answer("v.mp4", "the red ball jumps", "moment", duration=20.0,
                 frames=np.full((12, 16, 16, 3), 90, np.uint8))
    res.features = {"clip_times": np.linspace(0.8, 19.2, 12).astype(np.float32)}
    res.attention = {"step_scores": step, "window_scores": scores, "window_mask": valid, "windows": windows,
                     "num_steps": np.array(10)}
    res.moments = [(11.0, 15.0, 0.9), (2.0, 4.0, 0.5)]
    return res


def test_cmin_timeline_places_the_moments_and_the_truth_on_the_time_axis(tmp_path):
    res = _cmin_answer()
    img = np.asarray(timeline(res, ground_truth=(12.0, 16.0)))
    assert img.shape[1] == TIMELINE_WIDTH

    def x(t):  # the figure's time axis
        return LABEL_W + (TIMELINE_WIDTH - 2 * PAD - LABEL_W) * t / 20.0

    for colour, (a, b) in (((220, 40, 40), (11.0, 15.0)), ((30, 150, 60), (12.0, 16.0))):
        hit = (np.abs(img.astype(int) - colour) <= 2).all(-1)
        hit[:, :LABEL_W] = False  # row labels ("#1 0.900", "true moment") are drawn in the same colours
        bars = hit.sum(1) > 0.6 * (x(b) - x(a))  # rows crossed by the moment's bar (or its band)
        assert bars.sum() >= 6, colour
        cols = np.nonzero(hit[bars].any(0))[0]
        assert abs(cols.min() - x(a)) <= 2 and abs(cols.max() - x(b)) <= 3, (colour, cols.min(), cols.max())
    out = render_explanation(res, _answerer("cmin"), tmp_path / "c.png", ground_truth=(12.0, 16.0))
    page = Image.open(out)
    assert page.width == TIMELINE_WIDTH and page.height > img.shape[0]
