"""MSPAN: graph construction, block shapes, ablation switches, overfitting, config validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.layers import QuestionEncoder
from models.mspan import (
    MSPAN,
    CrossScaleAttention,
    MSPANConfig,
    MultiScalePooling,
    QuestionFusion,
    QuestionGuidedReadout,
    ScaleGCN,
    build_graphs,
    mspan,
)
from train.tasks.qa_losses import count_loss, hinge_loss, open_ended_loss

TINY = MSPANConfig(
    num_frames=8, appearance_dim=12, motion_dim=10, node_dim=32, hidden_dim=16, word_dim=8, lstm_layers=1,
    num_scales=4, iterations=2, dropout=0.0,
)
VOCAB, ANSWERS, CANDS = 30, 7, 5


def make_batch(b: int = 4, *, cfg: MSPANConfig = TINY, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 7, (b,), generator=g)
    q = torch.randint(1, VOCAB, (b, 6), generator=g) * (torch.arange(6) < lens[:, None])
    clen = torch.randint(1, 4, (b, CANDS), generator=g)
    cands = torch.randint(1, VOCAB, (b, CANDS, 3), generator=g) * (torch.arange(3) < clen[..., None])
    return {
        "qid": [f"q{i}" for i in range(b)],
        "video_id": [f"v{i}" for i in range(b)],
        "appearance": torch.randn(b, cfg.num_frames, cfg.appearance_dim, generator=g),
        "motion": torch.randn(b, cfg.num_frames, cfg.motion_dim, generator=g),
        "question": q,
        "question_len": lens,
        "candidates": cands,
        "candidates_len": clen,
    }


def build(task: str, cfg: MSPANConfig = TINY, **kw) -> MSPAN:
    torch.manual_seed(0)
    return mspan(cfg, vocab_size=VOCAB, num_answers=ANSWERS, task_type=task, **kw)


# ---------------------------------------------------------------- graph construction


def test_graph_sizes_and_intra_scale_edges():
    g = build_graphs(5, 3)
    assert g.sizes == (5, 4, 3)  # M_i = N - i + 1
    assert g.offsets == (0, 5, 9, 12)
    assert g.scale.tolist() == [1] * 5 + [2] * 4 + [3] * 3
    assert g.start.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    # scale 1: |x - y| <= 1 (tridiagonal); scale 2: |x - y| <= 2; scale 3 (3 nodes): all joined
    s1 = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    s2 = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    s3 = torch.ones(3, 3, dtype=torch.int64)
    expected = torch.block_diag(s1, s2, s3).bool()
    assert torch.equal(g.intra, expected)


def test_gcn_adjacency_is_symmetric_normalised_and_block_diagonal():
    g = build_graphs(6, 4)
    a = g.intra.double().numpy()
    d = np.diag(a.sum(1) ** -0.5)
    np.testing.assert_allclose(g.gcn_adj.numpy(), d @ a @ d, rtol=1e-6, atol=1e-7)
    assert torch.allclose(g.gcn_adj, g.gcn_adj.T)
    different_scale = g.scale[:, None] != g.scale[None, :]
    assert (g.gcn_adj[different_scale] == 0).all()


def test_cross_scale_edges_link_nodes_sharing_frames():
    g = build_graphs(5, 3)
    # scale 2 node y covers frames y, y+1: scale-1 nodes (single frames) y and y+1
    expected = [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    assert g.cross(2, 1).int().tolist() == expected
    # scale 3 node y covers y..y+2; scale-2 node x covers x, x+1; they share a frame iff y-1 <= x <= y+2
    assert g.cross(3, 2).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]]
    assert torch.equal(g.cross(2, 3), g.cross(3, 2).T)  # bottom-up uses the same edges reversed
    dense = g.dense()
    assert not dense[g.scale[:, None] == g.scale[None, :]].any()
    assert torch.equal(dense, dense.T)
    # scale 1 frame 0 shares frames with scale-2 node 0 and scale-3 node 0 only
    assert dense[0].nonzero().flatten().tolist() == [5, 9]
    # every node has a neighbour on each adjacent scale (softmax over neighbours is well defined)
    for i in range(1, 3):
        assert g.cross(i + 1, i).any(dim=1).all() and g.cross(i, i + 1).any(dim=1).all()


@pytest.mark.parametrize("n,k", [(1, 1), (4, 4), (16, 8)])
def test_graph_node_counts(n, k):
    g = build_graphs(n, k)
    assert sum(g.sizes) == g.scale.numel() == sum(n - i + 1 for i in range(1, k + 1))
    assert g.intra.diagonal().all()  # self-loops


def test_build_graphs_rejects_too_many_scales():
    with pytest.raises(ValueError, match="num_scales"):
        build_graphs(4, 5)


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_multi_scale_pooling_values(pool):
    x = torch.randn(2, 6, 3)
    out = MultiScalePooling(3, pool)(x)
    assert out.shape == (2, 6 + 5 + 4, 3)
    g = build_graphs(6, 3)
    for node in range(out.shape[1]):
        s, i = int(g.start[node]), int(g.scale[node])
        window = x[:, s:s + i]
        ref = window.amax(dim=1) if pool == "max" else window.mean(dim=1)
        torch.testing.assert_close(out[:, node], ref)


def test_block_shapes():
    B, S, D, H = 3, 26, 32, 16
    g = build_graphs(8, 4)
    assert S == sum(g.sizes)
    nodes = torch.randn(B, S, D)
    assert ScaleGCN(D, num_layers=2)(nodes, g.gcn_adj).shape == (B, S, D)
    att = CrossScaleAttention(D, H)
    q = torch.randn(B, H)
    src, tgt = nodes[:, :8], nodes[:, 8:15]
    u, a = att.attend(src, att.w1(tgt), att.w3(q), att.w5(q), g.cross(2, 1))
    assert u.shape == (B, 7, H) and a.shape == (B, 7, 8)
    torch.testing.assert_close(a.sum(-1), torch.ones(B, 7))
    assert att.update(att.w6_node(tgt), u).shape == (B, 7, D)
    video, alpha = QuestionGuidedReadout(D, H)(nodes[:, :8], q)
    assert video.shape == (B, D) and alpha.shape == (B, 8)
    assert QuestionFusion(D, H)(torch.randn(B, D), q).shape == (B, H)
    assert QuestionFusion(D, H)(torch.randn(B, 5, D), torch.randn(B, 5, H)).shape == (B, 5, H)


def test_gcn_only_mixes_nodes_of_the_same_scale():
    g = build_graphs(6, 3)
    gcn = ScaleGCN(8, num_layers=2)
    nodes = torch.randn(1, sum(g.sizes), 8)
    out = gcn(nodes, g.gcn_adj)
    changed = nodes.clone()
    changed[:, 6:11] += 5.0  # every node of scale 2
    out2 = gcn(changed, g.gcn_adj)
    torch.testing.assert_close(out2[:, :6], out[:, :6])
    torch.testing.assert_close(out2[:, 11:], out[:, 11:])
    assert not torch.allclose(out2[:, 6:11], out[:, 6:11])


def test_attention_softmax_is_over_neighbours_only():
    torch.manual_seed(0)
    att = CrossScaleAttention(8, 4)
    g = build_graphs(5, 2)
    edges = g.cross(2, 1)  # (4, 5)
    src, tgt, q = torch.randn(2, 5, 8), torch.randn(2, 4, 8), torch.randn(2, 4)
    u, a = att.attend(src, att.w1(tgt), att.w3(q), att.w5(q), edges)
    assert (a[:, ~edges] == 0).all()
    src2 = src.clone()
    src2[:, 4] = 100.0  # frame 4 is a neighbour of scale-2 node 3 only
    u2, _ = att.attend(src2, att.w1(tgt), att.w3(q), att.w5(q), edges)
    torch.testing.assert_close(u2[:, :3], u[:, :3])
    assert not torch.allclose(u2[:, 3], u[:, 3])


def test_question_encoder_shapes_padding_and_embeddings():
    emb = np.random.default_rng(0).normal(size=(VOCAB, 8)).astype(np.float32)
    enc = QuestionEncoder(VOCAB, embed_dim=8, hidden_dim=16, num_layers=2, embeddings=emb).eval()
    assert torch.equal(enc.embedding.weight.detach(), torch.from_numpy(emb))
    tokens = torch.tensor([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0]])
    words, sent = enc(tokens, torch.tensor([3, 1]))
    assert words.shape == (2, 5, 16) and sent.shape == (2, 16)
    assert (words[0, 3:] == 0).all() and (words[1, 1:] == 0).all()
    longer = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.int64)], dim=1)  # more padding, same text
    _, sent2 = enc(longer, torch.tensor([3, 1]))
    torch.testing.assert_close(sent2, sent)
    frozen = QuestionEncoder(VOCAB, embed_dim=8, hidden_dim=16, embeddings=emb, freeze_embeddings=True)
    assert not frozen.embedding.weight.requires_grad
    with pytest.raises(ValueError, match=r"\(30, 8\)"):
        QuestionEncoder(VOCAB, embed_dim=8, embeddings=emb[:, :6])


def test_progressive_passes_propagate_across_all_scales():
    model = build("open")
    g = build_graphs(8, 4)
    nodes = torch.randn(2, sum(g.sizes), 32, requires_grad=True)
    q = torch.randn(2, 16)
    block = model.blocks[0]
    weights = torch.zeros(2, sum(g.sizes), sum(g.sizes))
    out = model._top_down(block.top_down, nodes, nodes.detach(), q, weights)
    out[:, g.offsets[3]:].sum().backward()  # coarsest scale after top-down
    assert nodes.grad[:, : g.offsets[1]].abs().sum() > 0  # ... depends on scale 1 through scales 2, 3
    nodes.grad = None
    out = model._bottom_up(block.bottom_up, nodes, nodes.detach(), q, weights)
    out[:, : g.offsets[1]].sum().backward()  # finest scale after bottom-up
    assert nodes.grad[:, g.offsets[3]:].abs().sum() > 0  # ... depends on scale K


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("task,key,shape", [("open", "logits", (4, ANSWERS)), ("mc", "scores", (4, CANDS)),
                                            ("count", "count", (4,))])
def test_output_contract(task, key, shape):
    model = build(task)
    out = model(make_batch())
    assert set(out) == {key, "readout_weights", "cross_scale_attention"}
    assert out[key].shape == shape and torch.isfinite(out[key]).all()
    out[key].float().pow(2).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, f"parameters without gradient for {task}: {unused}"  # DDP-safe: all used


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_forward_does_not_mutate_batch(task):
    batch = make_batch()
    snapshot = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in batch.items()}
    build(task)(batch)
    assert batch.keys() == snapshot.keys()
    for k, v in batch.items():
        assert torch.equal(v, snapshot[k]) if torch.is_tensor(v) else v == snapshot[k]


def test_samples_do_not_interact_and_padding_is_ignored():
    model = build("mc").eval()
    batch = make_batch(4)
    with torch.no_grad():
        full = model(batch)["scores"]
        one = model({k: v[1:2] for k, v in batch.items()})["scores"]
        padded = dict(batch, question=torch.cat([batch["question"], torch.zeros(4, 3, dtype=torch.int64)], 1))
        again = model(padded)["scores"]
    torch.testing.assert_close(one, full[1:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_bf16_autocast_runs_and_stays_close(task):
    model = build(task).eval()
    batch = make_batch()
    key = {"open": "logits", "mc": "scores", "count": "count"}[task]
    with torch.no_grad():
        ref = model(batch)[key]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)[key]
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)


def test_wrong_feature_shape_is_a_clear_error():
    model = build("open")
    batch = make_batch()
    batch["motion"] = torch.randn(4, 8, 11)
    with pytest.raises(ValueError, match=r"motion.*\(B, 8, 10\).*motion_dim"):
        model(batch)
    batch = make_batch()
    batch["appearance"] = torch.randn(4, 7, 12)
    with pytest.raises(ValueError, match="num_frames"):
        model(batch)
    batch = make_batch()
    del batch["motion"]
    with pytest.raises(KeyError, match=r"\['motion'\].*'mspan' feature set"):
        model(batch)
    batch = make_batch()
    del batch["candidates"]
    with pytest.raises(KeyError, match="candidates"):
        build("mc")(batch)


ABLATIONS = {
    "paper": {},
    "avg_pool": {"pool": "avg"},
    "no_gcn": {"use_gcn": False},
    "dense": {"interaction": "dense"},
    "top_down": {"interaction": "top_down"},
    "bottom_up": {"interaction": "bottom_up"},
    "T0": {"iterations": 0},
    "T4": {"iterations": 4},
    "K1": {"num_scales": 1},
    "K8": {"num_scales": 8},
    "shared_weights": {"share_iteration_weights": True},
    "official": {"variant": "official"},
    "official_shared_dense": {"variant": "official", "share_iteration_weights": True, "interaction": "dense"},
    "gcn_3_layers": {"gcn_layers": 3},
    "frozen_words": {"freeze_embeddings": True},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_switch_trains_one_step(name):
    cfg = dataclasses.replace(TINY, **ABLATIONS[name])
    model = build("open", cfg, embeddings=np.ones((VOCAB, 8), np.float32))
    batch = make_batch(6)
    answer = torch.randint(0, ANSWERS, (6,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = open_ended_loss(model(batch)["logits"], answer)
    loss.backward()
    for n, p in model.named_parameters():
        if n == "readout.w9.bias":  # official only: used, but its gradient is 0 (it cancels in the softmax)
            continue
        if p.requires_grad:  # every trainable parameter is used (DDP needs no find_unused_parameters)
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
            assert p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    opt.step()
    for n, p in model.named_parameters():
        assert n == "readout.w9.bias" or torch.equal(p, before[n]) != p.requires_grad, n
    with torch.no_grad():
        assert open_ended_loss(model(batch)["logits"], answer) < loss
    emb = model.question_encoder.embedding.weight
    assert emb.requires_grad == (name != "frozen_words")


def test_ablations_change_the_architecture():
    n_params = {
        name: sum(p.numel() for p in build("open", dataclasses.replace(TINY, **kw)).parameters())
        for name, kw in ABLATIONS.items()
    }
    paper = n_params["paper"]
    assert n_params["no_gcn"] < paper and n_params["T0"] < n_params["dense"] < paper
    assert n_params["top_down"] == n_params["bottom_up"] == n_params["dense"]
    assert n_params["shared_weights"] < paper < n_params["T4"] and n_params["avg_pool"] == paper
    # official: + the readout score bias and the decoder's BatchNorm (weight and bias of H = 16)
    assert n_params["official"] == paper + 1 + 2 * 16
    # avg and max pooling give different graphs from the same weights
    batch = make_batch()
    out_max = build("open").eval()(batch)["logits"]
    out_avg = build("open", dataclasses.replace(TINY, pool="avg")).eval()(batch)["logits"]
    assert not torch.allclose(out_max, out_avg)


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_overfits_a_small_batch(task):
    batch = make_batch(8, seed=1)
    g = torch.Generator().manual_seed(2)
    if task == "open":
        answer, loss_fn, key = torch.randint(0, ANSWERS, (8,), generator=g), open_ended_loss, "logits"
    elif task == "mc":
        answer, loss_fn, key = torch.randint(0, CANDS, (8,), generator=g), hinge_loss, "scores"
    else:
        answer, loss_fn, key = torch.randint(1, 11, (8,), generator=g).float(), count_loss, "count"
    model = build(task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        opt.zero_grad()
        loss = loss_fn(model(batch)[key], answer)
        first = loss.item() if first is None else first
        if loss.item() < 0.01:
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.01, f"{task}: loss {first:.3f} -> {loss.item():.4f}"
    assert first > 0.5


# ---------------------------------------------------------------- config


def test_paper_defaults():
    cfg = MSPANConfig()
    assert (cfg.num_frames, cfg.num_scales, cfg.iterations, cfg.gcn_layers) == (16, 8, 3, 2)
    assert (cfg.appearance_dim, cfg.motion_dim, cfg.node_dim, cfg.hidden_dim, cfg.word_dim) == (
        2048, 2048, 2048, 512, 300)
    assert (cfg.lstm_layers, cfg.pool, cfg.use_gcn, cfg.interaction) == (3, "max", True, "progressive")
    assert not cfg.share_iteration_weights  # one weight set per iteration, like the official code
    assert (cfg.variant, cfg.dropout, cfg.readout_dropout) == ("paper", 0.1, 0.2)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("pool", "min", "'max', 'avg'"),
        ("interaction", "sparse", "'progressive', 'dense'"),
        ("num_scales", 0, ">= 1"),
        ("num_scales", 17, "num_frames"),
        ("iterations", -1, ">= 0"),
        ("iterations", 1.5, "integer"),
        ("dropout", 1.0, r"\[0, 1\)"),
        ("dropout", "0.1", "number"),
        ("readout_dropout", -0.1, r"\[0, 1\)"),
        ("variant", "authors", "'paper', 'official'"),
        ("use_gcn", "false", "true or false"),
        ("hidden_dim", 511, "even"),
        ("node_dim", 0, ">= 1"),
        ("gcn_layers", True, "integer"),
    ],
)
def test_invalid_config_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=rf"MSPANConfig\.{field}=.*{match}"):
        MSPANConfig(**{field: value})


def test_builder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task_type"):
        build("span")
    with pytest.raises(ValueError, match="num_answers"):
        mspan(TINY, vocab_size=VOCAB, num_answers=0, task_type="open")
    with pytest.raises(TypeError, match="MSPANConfig"):
        mspan({"num_frames": 8}, vocab_size=VOCAB, num_answers=3, task_type="open")


# ---------------------------------------------------------------- settings, explanations, candidates


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_each_setting_trains_a_step_for_each_task_type(variant, task):
    cfg = dataclasses.replace(TINY, variant=variant, dropout=0.1)
    model = build(task, cfg)
    batch = make_batch(6, seed=3)
    g = torch.Generator().manual_seed(4)
    answer = {"open": torch.randint(0, ANSWERS, (6,), generator=g),
              "mc": torch.randint(0, CANDS, (6,), generator=g),
              "count": torch.randint(1, 11, (6,), generator=g).float()}[task]
    loss_fn, key = {"open": (open_ended_loss, "logits"), "mc": (hinge_loss, "scores"),
                    "count": (count_loss, "count")}[task]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = loss_fn(model(batch)[key], answer)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) >= len(before) - 1  # all but the official readout score bias (it cancels)
    has_bn = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert has_bn == (variant == "official" and task != "mc")
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)[key]).all()


def test_official_setting_differs_from_the_paper_point_by_point():
    g = build_graphs(8, 3)
    td = g.official_cross(2, 1)  # (7, 8): target scale 2, source scale 1
    assert td.sum(1).tolist() == [1] * 7 and torch.equal(td, torch.eye(7, 8, dtype=torch.bool))  # |x-y| <= 0
    assert g.cross(2, 1).sum(1).tolist() == [2] * 7  # paper: both frames of each scale-2 node
    three = g.official_cross(3, 2)  # |x - y| <= 1
    assert three[2].nonzero().flatten().tolist() == [1, 2, 3]
    assert g.cross(3, 2)[2].nonzero().flatten().tolist() == [1, 2, 3, 4]  # paper adds x = y + i
    assert torch.equal(g.official_cross(1, 2), g.official_cross(2, 1).T)
    # official attention: non-neighbours keep weight exp(0) / Z > 0
    torch.manual_seed(0)
    att = CrossScaleAttention(8, 4, official=True).eval()
    src, tgt, q = torch.randn(2, 8, 8), torch.randn(2, 7, 8), torch.randn(2, 4)
    _, a = att.attend(src, att.w1(tgt), att.w3(q), att.w5(q), td)
    assert (a[:, ~td] > 0).all()
    model = build("open", dataclasses.replace(TINY, variant="official"))
    assert model.question_encoder.sentence_layer == 0 and model.readout.w9.bias is not None
    assert build("open").question_encoder.sentence_layer == 0  # TINY has 1 LSTM layer: the last is the first


def test_question_encoder_sentence_layer_picks_that_layers_states():
    torch.manual_seed(0)
    enc = QuestionEncoder(VOCAB, embed_dim=8, hidden_dim=16, num_layers=3, sentence_layer=0).eval()
    tokens, lens = torch.tensor([[3, 4, 5, 0]]), torch.tensor([3])
    x = enc.embedding(tokens[:, :3])
    _, (h_n, _) = enc.lstm(x)
    _, sent = enc(tokens, lens)
    torch.testing.assert_close(sent, torch.cat([h_n[0], h_n[1]], dim=-1))
    last = QuestionEncoder(VOCAB, embed_dim=8, hidden_dim=16, num_layers=3).eval()
    last.load_state_dict(enc.state_dict())
    torch.testing.assert_close(last(tokens, lens)[1], torch.cat([h_n[4], h_n[5]], dim=-1))
    with pytest.raises(ValueError, match="sentence_layer"):
        QuestionEncoder(VOCAB, num_layers=2, sentence_layer=2)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_explanations_readout_weights_and_cross_scale_attention(variant):
    model = build("open", dataclasses.replace(TINY, variant=variant)).eval()
    out = model(make_batch(3))
    g = build_graphs(8, 4)
    S = sum(g.sizes)
    w = out["readout_weights"]
    assert w.shape == (3, 8) and not w.requires_grad
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    att = out["cross_scale_attention"]
    assert att.shape == (3, 2 * 2, S, S) and not att.requires_grad  # T = 2 iterations x 2 passes
    o = g.offsets
    # top-down pass: rows of scales 2..K each sum to 1 over the previous scale's nodes, nothing else
    td = att[:, 0]
    torch.testing.assert_close(td[:, o[1]:].sum(-1), torch.ones(3, S - o[1]))
    assert (td[:, : o[1]] == 0).all()
    edges = g.cross(2, 1) if variant == "paper" else g.official_cross(2, 1)
    block = td[:, o[1]:o[2], : o[1]]
    assert (block[:, ~edges] == 0).all() if variant == "paper" else (block[:, ~edges] > 0).all()
    bu = att[:, 1]  # bottom-up: rows of scales 1..K-1 over the next coarser scale
    torch.testing.assert_close(bu[:, : o[3]].sum(-1), torch.ones(3, o[3]))
    scale, start = model.node_spans()
    assert torch.equal(scale, g.scale) and torch.equal(start, g.start)


def test_dense_ablation_reads_out_all_scales():
    seen = {}
    for interaction in ("dense", "progressive"):
        model = build("open", dataclasses.replace(TINY, interaction=interaction)).eval()
        model.readout.register_forward_hook(lambda m, args, out, i=interaction: seen.__setitem__(i, args[0]))
        out = model(make_batch(2))
        seen[interaction + "_weights"] = out["readout_weights"]
    S = sum(build_graphs(8, 4).sizes)
    assert seen["dense"].shape == (2, S, 32) and seen["dense_weights"].shape == (2, S)  # all K graphs
    assert seen["progressive"].shape == (2, 8, 32) and seen["progressive_weights"].shape == (2, 8)  # G_1
    assert (seen["dense_weights"][:, 8:] > 0).all()  # the coarse scales get weight too


def test_an_all_padding_candidate_never_wins():
    model = build("mc")
    batch = make_batch(6, seed=5)
    batch["candidates"][:, 2] = 0
    batch["candidates_len"][:, 2] = 0  # candidate 2: padding only
    answer = torch.tensor([0, 1, 3, 4, 0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # training with a padded candidate stays finite
        opt.zero_grad()
        loss = hinge_loss(model(batch)["scores"], answer)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    # even a decoder that scores the padding highest cannot make it win
    with torch.no_grad():
        model.decoder[-1].bias.fill_(1e6)
        scores = model.eval()(batch)["scores"]
    assert torch.isneginf(scores[:, 2]).all() and (scores.argmax(1) != 2).all()
    assert torch.isfinite(scores[:, [0, 1, 3, 4]]).all()


def test_parameter_count_at_frameqa_sizes_matches_the_official_model():
    # the official VideoQANetwork (gzcsudo/MSPAN-VideoQA, --num_scale 8 --K 3 --T 2, 2048-d features,
    # module_dim 512) with a 5000-word vocabulary and 1000 answers has 96,254,281 parameters (counted by
    # instantiating it). Built on the meta device: no memory, no initialisation.
    with torch.device("meta"):
        n = {v: sum(p.numel() for p in mspan(MSPANConfig(variant=v), vocab_size=5000, num_answers=1000,
                                             task_type="open").parameters()) for v in ("paper", "official")}
    assert n["official"] == 96_254_281
    assert n["paper"] == 96_254_281 - 2 * 512 - 1  # no decoder BatchNorm, no readout score bias
