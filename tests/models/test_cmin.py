"""CMIN: block shapes, masks, ablation switches, learning a small batch."""

from __future__ import annotations

import pytest
import torch

from models import get_model
from models.cmin import (
    CMIN,
    CMINConfig,
    CrossGate,
    SelfAttention,
    SyntacticGCN,
    WordAggregation,
    cmin,
    integer_anchors,
    valid_windows,
    window_layout,
)
from train.tasks import compute_losses

SMALL = dict(video_dim=12, d_model=16, word_dim=8, num_heads=2, num_dep_labels=5, window_widths=(2, 4),
             dropout=0.0)


def _batch(B=3, T=10, L=5, D=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    edges = torch.zeros(B, L, L, dtype=torch.int64)
    edges[:, 1, 0] = 2  # token 1 heads token 0 with label 1
    edges[:, 1, 2] = 3
    return {
        "qid": [f"q{i}" for i in range(B)], "video_id": [f"v{i}" for i in range(B)],
        "question": torch.randint(2, 20, (B, L), generator=g),
        "question_len": torch.tensor([L, L - 1, 2][:B]),
        "edges": edges, "clips": torch.randn(B, T, D, generator=g),
        "clips_mask": torch.ones(B, T, dtype=torch.bool),
        "duration": torch.tensor([20.0, 35.0, 10.0][:B], dtype=torch.float64),
        "moment": torch.tensor([[2.0, 6.0], [10.0, 20.0], [0.0, 4.0]][:B], dtype=torch.float64),
    }


def test_registry_entry():
    entry = get_model("cmin")
    assert entry.feature_set == "cmin" and entry.task_types == ("moment",) and entry.config_cls is CMINConfig


def test_block_shapes():
    B, T, L, D = 2, 7, 4, 16
    h, v = torch.randn(B, L, D), torch.randn(B, T, D)
    edges = torch.zeros(B, L, L, dtype=torch.int64)
    edges[:, 0, 1] = 1
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    for gates in (False, True):
        out = SyntacticGCN(D, num_labels=3, edge_gates=gates)(h, edges, mask)
        assert out.shape == (B, L, D) and (out[0, 3] == 0).all()
    assert SelfAttention(D, 4)(v, torch.ones(B, 1, T, T, dtype=torch.bool)).shape == (B, T, D)
    s, a = WordAggregation(D)(v, h, mask)
    assert s.shape == (B, T, D) and a.shape == (B, T, L)
    torch.testing.assert_close(a.sum(-1), torch.ones(B, T))
    assert (a[0, :, 3] == 0).all()  # padded word never attended
    gv, gs = CrossGate(D)(v, s)
    assert gv.shape == gs.shape == (B, T, D)


def test_gcn_uses_edges_and_labels():
    torch.manual_seed(0)
    layer = SyntacticGCN(4, num_labels=3)
    with torch.no_grad():
        layer.b_lab.normal_()
    h = torch.randn(1, 3, 4)
    mask = torch.ones(1, 3, dtype=torch.bool)
    none = torch.zeros(1, 3, 3, dtype=torch.int64)
    one = none.clone()
    one[0, 0, 2] = 2
    other_label = none.clone()
    other_label[0, 0, 2] = 3
    a, b, c = (layer(h, e, mask) for e in (none, one, other_label))
    assert torch.equal(a[0, 1], b[0, 1])  # token 1 touches no edge
    assert not torch.allclose(a[0, 2], b[0, 2]) and not torch.allclose(b[0, 2], c[0, 2])


def test_window_layout():
    w = window_layout(4, (2, 3))
    assert w.shape == (8, 2)
    torch.testing.assert_close(w[0], torch.tensor([-0.5, 1.5]))  # step 0, width 2
    torch.testing.assert_close(w[3], torch.tensor([0.0, 3.0]))  # step 1, width 3


def test_forward_outputs():
    model = cmin(CMINConfig(**SMALL), vocab_size=20).eval()
    batch = _batch()
    out = model(batch)
    B, T, K = 3, 10, 2
    assert out["window_scores"].shape == (B, T * K) and out["window_offsets"].shape == (B, T * K, 2)
    assert out["window_mask"].shape == (B, T * K) and out["windows"].shape == (T * K, 2)
    assert out["step_scores"].shape == (B, T) and out["word_attention"].shape == (B, T, 5)
    assert torch.equal(out["num_steps"], torch.tensor([T] * B))
    # step 0's windows start before the video (masked, as the official code); step 1's width-2 one fits
    assert not out["window_mask"][:, :2].any() and out["window_mask"][:, 2].all()
    assert torch.isfinite(out["step_scores"][:, :9]).all()  # no even-width window covers the last step
    assert batch["clips"].shape == (3, 10, 12)  # input not mutated


def test_padded_steps_do_not_change_the_valid_windows():
    torch.manual_seed(0)
    model = cmin(CMINConfig(**SMALL), vocab_size=20).eval()
    batch = _batch(B=2, T=8)
    padded = dict(batch)
    padded["clips"] = torch.cat([batch["clips"], 50 * torch.randn(2, 5, 12)], 1)  # garbage in the padding
    padded["clips_mask"] = torch.cat([batch["clips_mask"], torch.zeros(2, 5, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, b = model(batch), model(padded)
    K = 2
    va = a["window_scores"].view(2, 8, K)
    vb = b["window_scores"].view(2, 13, K)[:, :8]
    valid = a["window_mask"].view(2, 8, K)
    torch.testing.assert_close(va[valid], vb[valid], rtol=1e-5, atol=1e-5)
    assert torch.equal(b["window_mask"].view(2, 13, K)[:, :8], valid)
    assert not b["window_mask"].view(2, 13, K)[:, 8:].any()
    assert torch.isinf(b["step_scores"][:, 8:]).all()


@pytest.mark.parametrize("switch", [
    {"use_gcn": False}, {"use_self_attention": False}, {"num_interactions": 2}, {"use_aggregation": False},
    {"use_cross_gate": False}, {"fusion": "bilinear"}, {"gcn_edge_gates": True}, {"attn_window": None},
    {"official_boxes": False},
])
def test_each_ablation_trains_a_step(switch):
    torch.manual_seed(0)
    model = cmin(CMINConfig(**{**SMALL, **switch}), vocab_size=20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = _batch()
    losses = compute_losses("moment", model(batch), batch)
    total = sum(losses.values())
    total.backward()
    opt.step()
    assert torch.isfinite(total) and set(losses) == {"loss_align", "loss_reg"}
    after = sum(compute_losses("moment", model(batch), batch).values())
    assert torch.isfinite(after)


def test_overfits_a_small_batch():
    torch.manual_seed(0)
    model = cmin(CMINConfig(**SMALL), vocab_size=20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = _batch()
    first = None
    for _ in range(60):
        loss = sum(compute_losses("moment", model(batch), batch).values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    from train.tasks.moment_losses import moment_predictions, official_steps, temporal_iou

    model.eval()
    with torch.no_grad():
        ranked = moment_predictions(model(batch), durations=batch["duration"], nms_threshold=0.5)
    # the official ground truth it learns: from the step the start falls in to the one the end falls in
    cells = official_steps(batch["moment"], batch["duration"], 10) + torch.tensor([0.0, 1.0]).double()
    target = cells * batch["duration"].view(-1, 1) / 10
    ious = [float(temporal_iou(m[0].double(), target[b])) for b, (m, _) in enumerate(ranked)]
    assert min(ious) > 0.4 and sum(ious) / 3 > 0.7, ious  # widths 2 and 4 steps: coarse on purpose


def test_config_validation():
    with pytest.raises(ValueError, match="window_widths"):
        CMINConfig(window_widths=())
    with pytest.raises(ValueError, match="num_heads"):
        CMINConfig(video_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="moment"):
        cmin(CMINConfig(), vocab_size=5, task_type="open")
    assert isinstance(cmin(CMINConfig(**SMALL), vocab_size=5), CMIN)


def test_defaults_are_the_official_runs():
    """The official run concatenates the gated features (its bilinear module is commented out) and refines
    int32-cast proposals; the network config holds no data or loss settings (train.moments.MomentConfig)."""
    cfg = CMINConfig()
    assert cfg.fusion == "concat" and cfg.official_boxes and cfg.video_dim == 500
    assert not {"pca_dim", "num_steps", "resample", "center_clips", "label_min_ratio", "reg_weight",
                "pca_whiten", "clips_dim"} & set(CMINConfig.__dataclass_fields__)
    model = cmin(cfg, vocab_size=5)
    assert not any(".u." in n or ".p." in n for n, _ in model.named_parameters())  # no bilinear weights


def test_integer_anchors_are_the_official_int32_proposals():
    """Official gcn_final.py: proposals [t - (w-1)/2, t + (w-1)/2] cast with type_as(int32 gt), i.e. truncated
    toward zero; ours are [start, end) so the official inclusive end is end - 1."""
    widths = (2, 3, 16)
    windows = window_layout(20, widths)
    t = torch.arange(20, dtype=torch.float64).view(-1, 1)
    w = torch.tensor(widths, dtype=torch.float64).view(1, -1)
    official = torch.stack([t - (w - 1) / 2, t + (w - 1) / 2], -1).view(-1, 2).to(torch.int32).float()
    anchors = integer_anchors(windows)
    torch.testing.assert_close(anchors - torch.tensor([0.0, 1.0]), official, rtol=0, atol=0)
    # validity: the official illegal = start < 0 or end >= T on the float proposals (before the cast)
    float_official = torch.stack([t - (w - 1) / 2, t + (w - 1) / 2], -1).view(-1, 2)
    legal = (float_official[:, 0] >= 0) & (float_official[:, 1] < 20)
    assert torch.equal(valid_windows(windows, torch.tensor([20]))[0], legal)
    exact = valid_windows(windows, torch.tensor([20]), official=False)[0]
    assert bool(legal[19 * 3]) and not bool(exact[19 * 3])  # t=19, w=2: ends half a step past the video
    torch.testing.assert_close(anchors[1], windows[1])  # odd widths: already whole steps
    torch.testing.assert_close(anchors[10 * 3 + 2], torch.tensor([2.0, 18.0]))  # t=10, w=16: [t - 8, t + 8)


def _official_gate_layer(layer, h, edges, mask):
    """The official GraphConvolution's sum, re-expressed: for each direction (self; dependent <- head;
    head <- dependent) x = W h, messages (x_j + b_label) * sigmoid(G x_j + c_label), summed per receiver."""
    B, L, D = h.shape
    out = torch.zeros(B, L, D)
    x = h @ layer.w_self.weight.T
    out += (x + layer.w_self.bias) * torch.sigmoid(x @ layer.g_self.weight.T + layer.g_self.bias)
    for b in range(B):
        for head in range(L):
            for dep in range(L):
                lab = int(edges[b, head, dep])
                if lab == 0:
                    continue
                for d, (recv, send) in enumerate(((dep, head), (head, dep))):
                    xs = layer.w_dir[d].weight @ h[b, send]
                    gate = torch.sigmoid(layer.g_dir[d].weight @ xs + layer.g_lab[d, lab - 1])
                    out[b, recv] += (xs + layer.b_lab[d, lab - 1]) * gate
    return torch.relu(out) * mask.unsqueeze(-1)


def test_edge_gates_gate_each_dimension_after_the_projection():
    torch.manual_seed(0)
    layer = SyntacticGCN(6, num_labels=4, edge_gates=True)
    with torch.no_grad():
        for p in (layer.b_lab, layer.g_lab, layer.g_self.bias):
            p.normal_()
    assert layer.g_lab.shape == (2, 4, 6) and layer.g_dir[0].weight.shape == (6, 6)  # per dimension
    h = torch.randn(2, 5, 6)
    edges = torch.zeros(2, 5, 5, dtype=torch.int64)
    edges[0, 1, 0], edges[0, 1, 2], edges[0, 2, 3] = 1, 3, 4
    edges[1, 0, 1], edges[1, 0, 2] = 2, 2
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(layer(h, edges, mask), _official_gate_layer(layer, h, edges, mask))


def test_keyword_fields_and_inputs_are_checked_with_clear_messages():
    with pytest.raises(TypeError):
        CMIN(20)  # keyword-only, as MSPAN and MASN
    with pytest.raises(ValueError, match=r"CMINConfig\.d_model=16\.0 is invalid"):
        CMIN(vocab_size=20, **{**SMALL, "d_model": 16.0})
    with pytest.raises(ValueError, match=r"CMINConfig\.use_gcn='no' is invalid"):
        CMINConfig(use_gcn="no")
    with pytest.raises(ValueError, match="moment"):
        CMIN(vocab_size=20, task_type="open", **SMALL)
    model = CMIN(vocab_size=20, **SMALL).eval()
    batch = _batch()
    with pytest.raises(KeyError, match=r"CMIN needs batch keys \['edges'\]"):
        model({k: v for k, v in batch.items() if k != "edges"})
    with pytest.raises(ValueError, match=r"batch\['clips'\] of shape \(B, T, 12\) but got \(3, 10, 7\)"):
        model({**batch, "clips": batch["clips"][..., :7]})
    with pytest.raises(ValueError, match=r"batch\['edges'\] of shape \(3, L', L'\) with L' >= 5"):
        model({**batch, "edges": batch["edges"][:, :3, :3]})
    with pytest.raises(ValueError, match=r"batch\['clips_mask'\] of shape \(3, 10\)"):
        model({**batch, "clips_mask": batch["clips_mask"][:, :4]})
