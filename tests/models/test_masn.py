"""MASN: block shapes, masks, gradients, ablation switches, overfitting, the official setting, config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from models.masn import (
    MASN,
    AttentionPooling,
    BilinearAttention,
    LearnedAdjacencyGraph,
    MASNConfig,
    MotionAppearanceFusion,
    NodeEncoder,
    ObjectGraph,
    OfficialQuestionEncoder,
    StdLayerNorm,
    join_question_and_candidates,
    masked_softmax,
    masn,
    sinusoid,
)
from train.tasks.qa_losses import count_loss, hinge_loss, open_ended_loss

TINY = MASNConfig(num_frames=5, appearance_dim=12, motion_dim=10, hidden_dim=16, word_dim=8, position_dim=4,
                  glimpses=2, ban_rank=2, dropout=0.0, attention_dropout=0.0, ban_dropout=0.0,
                  ban_attention_dropout=0.0)
VOCAB, ANSWERS, CANDS, M = 30, 7, 4, 3
OUT_KEY = {"open": "logits", "mc": "scores", "count": "count"}


def make_batch(b: int = 4, *, cfg: MASNConfig = TINY, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    T = cfg.num_frames
    lens = torch.tensor([3, 5, 1, 4, 2, 5, 3, 2][:b])
    frames = torch.tensor([5, 2, 4, 1, 3, 5, 5, 2][:b])
    fmask = torch.arange(T)[None] < frames[:, None]  # (B, T)
    omask = (torch.rand(b, T, M, generator=g) > 0.3) | (torch.arange(M) == 0)  # >= 1 object per frame
    omask = omask & fmask[..., None]
    clen = torch.randint(1, 4, (b, CANDS), generator=g)
    return {
        "qid": [f"q{i}" for i in range(b)],
        "appearance": torch.randn(b, T, cfg.appearance_dim, generator=g) * fmask[..., None],
        "motion": torch.randn(b, T, cfg.motion_dim, generator=g) * fmask[..., None],
        "objects": torch.randn(b, T, M, cfg.appearance_dim, generator=g) * omask[..., None],
        "object_boxes": torch.rand(b, T, M, 6, generator=g) * omask[..., None],
        "motion_objects": torch.randn(b, T, M, cfg.motion_dim, generator=g) * omask[..., None],
        "frame_mask": fmask,
        "object_mask": omask,
        "question": torch.randint(1, VOCAB, (b, 6), generator=g) * (torch.arange(6) < lens[:, None]),
        "question_len": lens,
        "candidates": torch.randint(1, VOCAB, (b, CANDS, 3), generator=g)
        * (torch.arange(3) < clen[..., None]),
        "candidates_len": clen,
    }


def build(task: str, cfg: MASNConfig = TINY, **kw) -> MASN:
    torch.manual_seed(0)
    return masn(cfg, vocab_size=VOCAB, num_answers=ANSWERS, task_type=task, **kw)


# ---------------------------------------------------------------- blocks


def test_helpers():
    pe = sinusoid(3, 4)
    assert pe.shape == (3, 4) and torch.allclose(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    p = masked_softmax(torch.randn(2, 3), torch.tensor([[True, False, True], [False, False, False]]), dim=-1)
    assert torch.allclose(p[0].sum(), torch.tensor(1.0)) and p[0, 1] == 0 and (p[1] == 0).all()
    x = torch.randn(2, 6)
    ln = StdLayerNorm(6)
    assert torch.allclose(ln(x), (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6))


def test_block_shapes():
    B, T, d, P = 2, 5, 16, 4
    K = T * M
    nodes = NodeEncoder(12, d, position_dim=P)(torch.randn(B, T, M, 12), torch.randn(B, T, M, P),
                                               torch.randn(B, T, P), torch.randn(B, T, 12))
    assert nodes.shape == (B, K, d)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[1, 7:] = False
    for graph in (ObjectGraph(d), LearnedAdjacencyGraph(d)):
        f, a = graph(nodes, valid)
        assert f.shape == (B, K, d) and a.shape == (B, K, K)
        assert torch.allclose(a[1, :7].sum(-1), torch.ones(7)) and (a[1, 7:] == 0).all()
        assert (a[1, :, 7:] == 0).all()  # padded nodes give nothing
    words = torch.randn(B, 6, d)
    wvalid = torch.arange(6)[None] < torch.tensor([[6], [3]])
    h, att = BilinearAttention(d, glimpses=3, rank=2).eval()(nodes, words, valid, wvalid)
    assert h.shape == (B, 6, d) and att.shape == (B, 3, K, 6)
    assert torch.allclose(att.sum(dim=(2, 3)), torch.ones(B, 3))
    assert (att[1, :, 7:] == 0).all() and (att[1, :, :, 3:] == 0).all()
    u = torch.randn(B, 12, d)
    uvalid = torch.cat([wvalid, wvalid], dim=1)
    for official in (False, True):
        fusion = MotionAppearanceFusion(d, ("appearance", "motion", "all"), official=official).eval()
        o, alpha = fusion(u, torch.randn(B, d), uvalid)
        assert o.shape == (B, 12, d) and alpha.shape == (B, 3)
        assert torch.allclose(alpha.sum(-1), torch.ones(B))
    f, w = AttentionPooling(d).eval()(u, uvalid)
    assert f.shape == (B, d) and w.shape == (B, 12) and (w[1, 3:6] == 0).all()
    words, q = OfficialQuestionEncoder(VOCAB, embed_dim=8, hidden_dim=d)(torch.tensor([[1, 2, 3], [4, 0, 0]]),
                                                                         torch.tensor([3, 1]))
    assert words.shape == (2, 3, d) and q.shape == (2, d) and (words[1, 1:] == 0).all()


def test_join_question_and_candidates():
    q = torch.tensor([[5, 6, 0], [7, 0, 0]])
    c = torch.tensor([[[1, 2], [3, 0]], [[4, 0], [8, 9]]])
    tokens, lengths = join_question_and_candidates(q, torch.tensor([2, 1]), c, torch.tensor([[2, 1], [1, 2]]))
    assert tokens.tolist() == [[5, 6, 1, 2, 0], [5, 6, 3, 0, 0], [7, 4, 0, 0, 0], [7, 8, 9, 0, 0]]
    assert lengths.tolist() == [4, 3, 2, 3]


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("task, shape", [("open", (4, ANSWERS)), ("mc", (4, CANDS)), ("count", (4,))])
def test_output_contract_and_attention_weights(task, shape, official):
    model = build(task, dataclasses.replace(TINY, official=official)).eval()
    batch = make_batch()
    before = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    out = model(batch)
    assert out[OUT_KEY[task]].shape == shape
    lead = (4, CANDS) if task == "mc" else (4,)
    for s in ("appearance", "motion"):
        att = out[f"{s}_attention"]
        assert att.shape == (*lead, TINY.num_frames, M)
        assert torch.allclose(att.sum(dim=(-2, -1)), torch.ones(lead), atol=1e-5)
        omask = batch["object_mask"] if task != "mc" else batch["object_mask"][:, None]
        assert (att[~omask.expand_as(att)] == 0).all()  # padded objects receive no attention
    assert out["fusion_weights"].shape == (*lead, 3)
    assert torch.allclose(out["pool_attention"].sum(-1), torch.ones(lead), atol=1e-5)
    for k, v in before.items():
        assert torch.equal(batch[k], v)  # the batch is not modified


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_padded_rows_change_no_output(task, official):
    model = build(task, dataclasses.replace(TINY, official=official)).eval()
    batch = make_batch()
    noisy = dict(batch)
    g = torch.Generator().manual_seed(5)
    fpad, opad = ~batch["frame_mask"], ~batch["object_mask"]
    for key in ("appearance", "motion"):
        noisy[key] = batch[key] + 9 * torch.randn(batch[key].shape, generator=g) * fpad[..., None]
    for key in ("objects", "object_boxes", "motion_objects"):
        noisy[key] = batch[key] + 9 * torch.randn(batch[key].shape, generator=g) * opad[..., None]
    noisy["question"] = batch["question"].clone()
    pad_q = torch.arange(6)[None] >= batch["question_len"][:, None]
    noisy["question"][pad_q] = 7  # values after each question's length
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


def test_samples_do_not_interact():
    model = build("open").eval()
    batch = make_batch()
    with torch.no_grad():
        full = model(batch)["logits"]
        one = model({k: v[1:2] for k, v in batch.items()})["logits"]
    torch.testing.assert_close(full[1:2], one, rtol=1e-5, atol=1e-5)


def _loss(task: str, out: dict, b: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if task == "open":
        return open_ended_loss(out["logits"], torch.randint(0, ANSWERS, (b,), generator=g))
    if task == "mc":
        return hinge_loss(out["scores"], torch.randint(0, CANDS, (b,), generator=g))
    return count_loss(out["count"], torch.randint(1, 11, (b,), generator=g).float())


ABLATIONS = {
    "paper": {},
    "appearance_only": {"streams": "appearance", "fusion": "none"},
    "motion_only": {"streams": "motion", "fusion": "none"},
    "concat_without_fusion": {"fusion": "none"},
    "single_attention": {"fusion": "single"},
    "dual_attention": {"fusion": "dual"},
    "official": {"official": True},
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_every_parameter_gets_a_gradient_and_a_step_trains(name, task):
    cfg = dataclasses.replace(TINY, freeze_embeddings=False, **ABLATIONS[name])
    model = build(task, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = make_batch()
    _loss(task, model(batch)).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.official:  # the official encoder's GloVe table is always frozen
        assert not model.question_encoder.embedding.weight.requires_grad
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    # official network: the pooling score's bias cancels in its softmax, and in multiple choice the answer
    # layer's biases are shared by all candidates and cancel in the hinge (the paper model has none of them)
    cancel = (("pool.score.3.bias",) + (("pool.merge.bias", "head.bias") if task == "mc" else ())
              if cfg.official else ())
    zero = [n for n, p in trainable if p.grad.abs().sum() == 0 and "embedding" not in n and n not in cancel]
    assert not zero, zero
    before = [p.detach().clone() for _, p in trainable]
    opt.step()
    assert all(not torch.equal(b, p) for b, (n, p) in zip(before, trainable, strict=True) if n not in cancel)


#: the paper's Table 3 rows as `vqa-train masn --set` items (models/masn.py docstring)
TABLE3 = {
    "appearance only": ["model.streams=appearance", "model.fusion=none"],
    "motion only": ["model.streams=motion", "model.fusion=none"],
    "concatenation without fusion": ["model.fusion=none"],
    "single-attention fusion": ["model.fusion=single"],
    "dual-attention fusion": ["model.fusion=dual"],
    "MASN": [],
}


def test_every_table3_row_runs_from_set_items():
    from train.config import build_config, parse_overrides

    base = {f.name: getattr(TINY, f.name) for f in dataclasses.fields(TINY)}
    scores, streams = {}, {}
    for row, items in TABLE3.items():
        cfg = build_config(MASNConfig, {**base, **parse_overrides(items)["model"]}, section="model")
        model = build("mc", cfg).eval()
        out = model(make_batch())
        assert out["scores"].shape == (4, CANDS) and torch.isfinite(out["scores"]).all()
        scores[row], streams[row] = out["scores"], model.stream_names
        fusion = () if model.fusion is None else model.fusion.names
        expected = {"single-attention fusion": ("all",), "dual-attention fusion": ("appearance", "motion"),
                    "MASN": ("appearance", "motion", "all")}.get(row, ())
        assert fusion == expected, row
    assert streams["appearance only"] == ("appearance",) and streams["motion only"] == ("motion",)
    assert len({tuple(v.flatten().tolist()) for v in scores.values()}) == len(TABLE3)  # six networks


def test_ablations_change_the_architecture():
    names = {n: {k.split(".")[0] + "." + k.split(".")[1] for k, _ in build("open", dataclasses.replace(
        TINY, **a)).named_parameters()} for n, a in ABLATIONS.items()}
    assert "nodes.motion" not in names["appearance_only"] and "nodes.appearance" not in names["motion_only"]
    assert not any(k.startswith("fusion.") for k in names["concat_without_fusion"])
    single = build("open", dataclasses.replace(TINY, fusion="single")).fusion.names
    dual = build("open", dataclasses.replace(TINY, fusion="dual")).fusion.names
    assert single == ("all",) and dual == ("appearance", "motion")
    paper, official = build("open"), build("open", dataclasses.replace(TINY, official=True))
    assert isinstance(paper.graphs["appearance"], ObjectGraph)
    assert isinstance(official.graphs["appearance"], LearnedAdjacencyGraph)
    assert len(official.graphs["appearance"].layers) == 3


def official_graph(x, valid, edge1, edge2, layers):
    """A transcription of the official ``VideoAdjLearner`` + ``GCN(num_layers=2)`` (model/modules/gcn.py,
    eval mode, weight norm folded): ``gcn_layers=2`` builds 1 + (2 - 1) + 1 = 3 graph convolutions."""
    h = F.relu(F.relu(x @ edge1.T) @ edge2.T)
    m = valid.float()
    adj_mask = m[:, :, None] * m[:, None, :]
    adj = (h @ h.transpose(1, 2)) - 1e10 * (1 - adj_mask)
    adj = (torch.softmax(adj * 100, dim=-1) * adj_mask).nan_to_num(0.0)
    out = [x]
    for w in layers:  # GraphConvolution: LayerNorm(adj @ (x W^T)) (no affine), then ReLU
        out.append(F.relu(F.layer_norm(adj @ (out[-1] @ w.T), (x.shape[-1],))))
    return F.layer_norm(x + out[-1], (x.shape[-1],))


def test_official_setting_has_the_official_three_layer_graph():
    model = build("open", dataclasses.replace(TINY, official=True)).eval()
    for s in ("appearance", "motion"):
        graph = model.graphs[s]
        assert isinstance(graph, LearnedAdjacencyGraph) and len(graph.layers) == 3  # gcn_layers=2 (+1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, TINY.hidden_dim, generator=g)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    ours, _ = graph(x, valid)
    ref = official_graph(x, valid, graph.edge1.weight, graph.edge2.weight, [w.weight for w in graph.layers])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_overfits_a_small_batch(task):
    model = build(task, dataclasses.replace(TINY, freeze_embeddings=False))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    batch = make_batch(8)
    g = torch.Generator().manual_seed(1)
    target = {"open": torch.randint(0, ANSWERS, (8,), generator=g),
              "mc": torch.randint(0, CANDS, (8,), generator=g),
              "count": torch.randint(1, 11, (8,), generator=g).float()}[task]
    fn = {"open": open_ended_loss, "mc": hinge_loss, "count": count_loss}[task]
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = fn(model(batch)[OUT_KEY[task]], target)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    model.eval()
    out = model(batch)[OUT_KEY[task]]
    if task == "count":
        assert count_loss(out, target).item() < 0.05 * first
    else:
        assert (out.argmax(-1) == target).float().mean() == 1.0


def test_wrong_feature_shape_and_missing_keys_are_clear_errors():
    model = build("open")
    batch = make_batch()
    with pytest.raises(KeyError, match="'masn' feature set"):
        model({k: v for k, v in batch.items() if k != "objects"})
    bad = dict(batch, objects=batch["objects"][..., :5])
    with pytest.raises(ValueError, match=r"batch\['objects'\]"):
        model(bad)
    with pytest.raises(KeyError, match="candidates"):
        build("mc")({k: v for k, v in batch.items() if k != "candidates"})


def test_paper_defaults():
    cfg = MASNConfig()
    assert (cfg.hidden_dim, cfg.glimpses, cfg.dropout, cfg.num_frames) == (512, 4, 0.3, 20)
    assert (cfg.appearance_dim, cfg.motion_dim, cfg.word_dim) == (2048, 2048, 300)
    assert cfg.streams == "both" and cfg.fusion == "full" and not cfg.official


@pytest.mark.parametrize("field, value, match", [
    ("hidden_dim", 15, "must be even"), ("glimpses", 0, ">= 1"), ("dropout", 1.0, r"\[0, 1\)"),
    ("streams", "audio", "choose one of"), ("fusion", "sum", "choose one of"),
    ("official", "yes", "true or false"),
])
def test_invalid_config_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **{field: value})


def test_incompatible_switches_are_rejected():
    with pytest.raises(ValueError, match="single stream"):
        MASNConfig(streams="motion")
    with pytest.raises(ValueError, match="official network is the full model"):
        MASNConfig(official=True, fusion="dual")
    with pytest.raises(TypeError, match="MASNConfig"):
        masn(object(), vocab_size=3, num_answers=2, task_type="open")


def test_model_fields_question_masks_and_candidates_are_checked():
    fields = dataclasses.asdict(TINY)
    with pytest.raises(ValueError, match=r"MASNConfig\.fusion='mean' is invalid"):
        MASN(vocab_size=VOCAB, task_type="open", num_answers=ANSWERS, **{**fields, "fusion": "mean"})
    batch = make_batch()
    with pytest.raises(ValueError, match=r"batch\['question'\] \(B, L\) .* B=4 but got \(3, 6\)"):
        build("open")({**batch, "question": batch["question"][:3]})
    with pytest.raises(ValueError, match=r"batch\['object_mask'\] of shape \(4, 5, 3\)"):
        build("open")({**batch, "object_mask": batch["object_mask"][:, :, :2]})
    with pytest.raises(ValueError, match=r"batch\['candidates'\] .* got \(4, 4, 3\) and \(4, 3\)"):
        build("mc")({**batch, "candidates_len": batch["candidates_len"][:, :3]})
