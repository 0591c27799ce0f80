"""SiaSamRea: sampling, Eq. (1)-(5), the anchor-only evaluation, ablations and learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models import get_model
from models.siasamrea import (
    SiaSamReaConfig,
    affinity,
    clip_range,
    sample_clips,
    siamese_loss,
    siasamrea,
    soft_label,
)
from train.tasks import compute_losses

D, V, A, C = 8, 20, 5, 4
TINY = SiaSamReaConfig(frames_dim=D, hidden_dim=16, num_heads=2, num_layers=1, word_dim=8, clip_frames=4,
                       frame_interval=2, siamese_shift=2, num_siamese=3, affinity_dim=8, dropout=0.0)


def _batch(B: int = 6, T: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None] < lengths[:, None]
    return {
        "frames": torch.randn(B, T, D, generator=g) * mask[..., None],
        "frames_mask": mask,
        "frame_times": (torch.arange(T)[None].float() / 4).expand(B, -1) * mask,
        "question": torch.randint(1, V, (B, 5), generator=g),
        "question_len": torch.randint(1, 6, (B,), generator=g),
        "candidates": torch.randint(1, V, (B, C, 3), generator=g),
        "candidates_len": torch.randint(1, 4, (B, C), generator=g),
        "answer": torch.randint(0, A if C > A else C, (B,), generator=g),
    }


def _model(task: str, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return siasamrea(dataclasses.replace(TINY, **changes), vocab_size=V, num_answers=A, task_type=task)


# ---------------------------------------------------------------- Eq. (1)-(5)


def test_affinity_has_zero_diagonal_and_rows_summing_to_one():
    feats = torch.randn(3, 5, 7)
    a = affinity(feats, 5)
    assert a.shape == (3, 5, 5)
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.zeros(3, 5))
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 5))
    # Eq. (1): the softmax of cosine similarities; clips that look alike get more weight
    z = torch.nn.functional.normalize(feats, dim=-1)
    sim = z @ z.transpose(1, 2)
    i, j, k = 0, 1, 2
    ratio = a[0, i, j] / a[0, i, k]
    torch.testing.assert_close(ratio, torch.exp(sim[0, i, j] - sim[0, i, k]))
    u = affinity(None, 4, uniform=True)[0]
    torch.testing.assert_close(u, (1 - torch.eye(4)) / 3)


def test_soft_label_sums_to_one_and_matches_a_hand_computation():
    aff = torch.tensor([[[0.0, 0.75, 0.25], [0.5, 0.0, 0.5], [0.2, 0.8, 0.0]]])
    preds = torch.tensor([[[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]]])
    w1, w2, omega = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6]), 0.5
    q = soft_label(aff, preds, w1, w2, omega)
    # by hand: propagated p^_i = sum_{j != i} A(i, j) p_j
    p0 = [0.75 * 0.1 + 0.25 * 0.5, 0.75 * 0.9 + 0.25 * 0.5]  # [0.2, 0.8]
    p1 = [0.5 * 0.6 + 0.5 * 0.5, 0.5 * 0.4 + 0.5 * 0.5]  # [0.55, 0.45]
    p2 = [0.2 * 0.6 + 0.8 * 0.1, 0.2 * 0.4 + 0.8 * 0.9]  # [0.2, 0.8]
    fused = [0.5 * p0[a] + 0.3 * p1[a] + 0.2 * p2[a] for a in range(2)]
    own = [0.2 * 0.6 + 0.2 * 0.1 + 0.6 * 0.5, 0.2 * 0.4 + 0.2 * 0.9 + 0.6 * 0.5]
    raw = [omega * fused[a] + (1 - omega) * own[a] for a in range(2)]
    want = torch.tensor([[raw[0] / sum(raw), raw[1] / sum(raw)]])
    torch.testing.assert_close(q, want)
    torch.testing.assert_close(q.sum(-1), torch.ones(1))
    # with unnormalised fusion weights Eq. (5)'s normalisation still gives a distribution
    q2 = soft_label(aff, preds, torch.tensor([2.0, 1.0, 1.0]), torch.tensor([0.1, 0.1, 3.0]), 0.3)
    torch.testing.assert_close(q2.sum(-1), torch.ones(1))


def test_siamese_loss_is_cross_entropy_with_the_soft_label():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.5, 0.25, 0.25]])
    want = -(q * torch.log_softmax(logits, -1)).sum()
    torch.testing.assert_close(siamese_loss("open", logits, q), want)
    count = siamese_loss("count", torch.tensor([3.0]), torch.tensor([[2.0]]))
    torch.testing.assert_close(count, torch.tensor(1.0))


def test_model_soft_label_is_a_distribution_and_affinity_rows_sum_to_one():
    m = _model("open").train()
    out = m(_batch())
    aff = out["affinity"]
    assert aff.shape == (6, 4, 4)
    torch.testing.assert_close(torch.diagonal(aff, dim1=1, dim2=2), torch.zeros(6, 4))
    torch.testing.assert_close(aff.sum(-1), torch.ones(6, 4))


def _anchor_share(m: torch.nn.Module, aff: torch.Tensor) -> float:
    """The weight of the anchor's own prediction p_0 in the soft label Q of Eq. (5):
    omega * sum_{i != 0} W1_i A^(i, 0) + (1 - omega) * W2_0 (1 / K when nothing favours the anchor)."""
    w1, w2, omega = m.w1.detach().softmax(0), m.w2.detach().softmax(0), m.cfg.omega
    return float((omega * (w1[1:] * aff[:, 1:, 0]).sum(-1) + (1 - omega) * w2[0]).mean())


def test_soft_label_does_not_collapse_towards_the_anchor():
    """Issue 23: trained through L_siamese alone (against detached predictions), W1, W2 and F learn to
    copy the anchor into its own soft label (main's code: anchor share 0.31 here, uniform = 0.2); the
    knowledge trained on the ground truth keeps the clips, which are exchangeable, near uniform."""
    torch.manual_seed(0)
    m = _model("open", num_siamese=4, frame_interval=1, siamese_shift=3).train()
    K = 5
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    B, T = 16, 24
    frames, answers = torch.randn(64, T, D, generator=g), torch.randint(0, A, (64,), generator=g)
    frames[torch.arange(64), :, answers] += 1.0  # the answer is visible in every frame
    for _ in range(150):
        i = torch.randint(0, 64, (B,), generator=g)
        batch = {"frames": frames[i], "frames_mask": torch.ones(B, T, dtype=torch.bool),
                 "question": torch.full((B, 3), 2), "question_len": torch.full((B,), 3), "answer": answers[i]}
        out = m(batch)
        losses = compute_losses("open", out, batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    share = _anchor_share(m, out["affinity"].detach())
    assert abs(share - 1 / K) < 0.05, share
    assert m.w2.softmax(0)[0] < 1.5 / K and m.w1.softmax(0)[0] > 0.5 / K, (m.w1, m.w2)


def test_knowledge_learns_which_clips_are_right():
    """F, W1 and W2 learn from the ground-truth loss on Q: with a confidently wrong anchor and right siamese
    clips, the anchor's share of Q falls and Q moves to the right answer; L_siamese leaves them alone."""
    m = _model("open", num_siamese=3)
    K, B = 4, 6
    preds = torch.zeros(B, K, A)
    preds[:, 0, 0], preds[:, 1:, 1] = 4.0, 4.0  # the anchor says 0, its siamese clips say 1 (right)
    preds.requires_grad_(True)
    feats = torch.randn(B, K, TINY.hidden_dim, generator=torch.Generator().manual_seed(0))
    answer = torch.ones(B, dtype=torch.long)
    knowledge = [m.skg.weight, m.skg.bias, m.w1, m.w2]
    aff, losses = m.siamese_term(preds, feats, answer)
    grads = torch.autograd.grad(losses["loss_siamese"], knowledge, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)  # Q is a fixed target of L_siamese
    share0 = _anchor_share(m, aff.detach())
    opt = torch.optim.Adam(knowledge, lr=0.05)
    for _ in range(30):
        aff, losses = m.siamese_term(preds, feats, answer)
        opt.zero_grad()
        losses["loss_knowledge"].backward()
        opt.step()
    assert _anchor_share(m, aff.detach()) < share0 - 0.1
    assert m.w2.softmax(0)[0] < 0.5 / K


# ---------------------------------------------------------------- siamese sampling


def test_clips_stay_inside_the_segment_and_keep_the_interval():
    B, T = 64, 40
    mask = torch.ones(B, T, dtype=torch.bool)
    times = torch.arange(T)[None].float().expand(B, -1) / 4
    g = torch.Generator().manual_seed(1)
    start = torch.rand(B, generator=g) * 6
    seg = torch.stack([start, start + 0.5 + torch.rand(B, generator=g) * 3], 1)
    seg[::7] = float("nan")  # questions without a segment use the whole video
    lo, hi = clip_range(mask, times, seg)
    idx, valid = sample_clips(lo, hi, clip_frames=4, interval=2, num_siamese=8, shift=3, train=True,
                              generator=g)
    assert idx.shape == valid.shape == (B, 9, 4)
    for b in range(B):
        t = times[b][idx[b]]
        if torch.isnan(seg[b]).any():
            assert lo[b] == 0 and hi[b] == T
        else:
            assert (t >= seg[b, 0]).all() and (t <= seg[b, 1]).all(), b
        assert (idx[b] >= lo[b]).all() and (idx[b] < hi[b]).all()
        steps = idx[b][valid[b].all(1)].diff(dim=-1)
        assert (steps == steps[:, :1]).all()  # the same interval in every clip
        assert len(set(steps[:, 0].tolist())) <= 1  # and the same for the anchor and its siamese clips


def test_short_videos_repeat_frames_with_a_mask():
    lo, hi = torch.tensor([0, 0, 0]), torch.tensor([2, 5, 30])
    idx, valid = sample_clips(lo, hi, clip_frames=4, interval=3)
    assert idx[0, 0].tolist() == [0, 1, 1, 1] and valid[0, 0].tolist() == [True, True, False, False]
    assert idx[1, 0].tolist() == [0, 1, 2, 3] and valid[1, 0].all()  # interval shrunk to fit
    assert idx[2, 0].diff().tolist() == [3, 3, 3] and valid[2, 0].all()
    # the evaluation anchor is deterministic and centred
    again, _ = sample_clips(lo, hi, clip_frames=4, interval=3)
    assert torch.equal(idx, again) and idx[2, 0, 0] == (30 - 10) // 2


def test_evaluation_clips_are_spread_over_the_range():
    lo, hi = torch.tensor([0, 5, 0]), torch.tensor([30, 20, 3])
    idx, valid = sample_clips(lo, hi, clip_frames=4, interval=3, eval_clips=4)
    assert idx.shape == valid.shape == (3, 4, 4)
    # 30 rows, clips of 10: starts evenly spaced from 0 to 20, the last clip ends at the last row
    assert idx[0, :, 0].tolist() == [0, 7, 13, 20] and idx[0, -1, -1] == 29 and valid[0].all()
    assert idx[1, :, 0].tolist() == [5, 7, 8, 10] and idx[1, -1, -1] == 19  # rows 5..19 of a segment
    assert (idx[2] == torch.tensor([0, 1, 2, 2])).all() and valid[2, :, 3].logical_not().all()  # too short
    again, _ = sample_clips(lo, hi, clip_frames=4, interval=3, eval_clips=4)
    assert torch.equal(idx, again)  # deterministic
    one, _ = sample_clips(lo, hi, clip_frames=4, interval=3)
    assert one[0, 0, 0] == 10  # one clip: the centred one, as before


@pytest.mark.parametrize("task,key", [("open", "logits"), ("mc", "scores"), ("count", "count")])
def test_multi_clip_evaluation_is_the_mean_over_the_clips(task, key):
    m = _model(task, eval_clips=3).eval()
    batch = _batch()
    with torch.no_grad():
        out = m(batch)
        lo, hi = clip_range(batch["frames_mask"])
        idx, valid = sample_clips(lo, hi, clip_frames=TINY.clip_frames, interval=TINY.frame_interval,
                                  eval_clips=3)
        text, pad = m.encode_text(batch)
        per_clip, _, _ = m.reason(batch["frames"], idx, valid, text, pad)
        want = m._task_output(per_clip).mean(dim=1)  # ClipBERT's consensus: the mean over the clips
        single = _model(task, eval_clips=1).eval()(batch)[key]
    torch.testing.assert_close(out[key], want)
    assert not torch.allclose(out[key], single)
    assert torch.equal(out["frame_index"], idx.reshape(6, 12)) and torch.equal(out["frame_valid"],
                                                                                 valid.reshape(6, 12))
    att = out["frame_attention"]
    assert att.shape == ((6, C, 12) if task == "mc" else (6, 12))
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]))


def test_segment_without_frames_takes_the_nearest_frame():
    mask = torch.ones(1, 8, dtype=torch.bool)
    times = torch.arange(8)[None].float()
    lo, hi = clip_range(mask, times, torch.tensor([[2.2, 2.6]]))
    assert (lo.item(), hi.item()) == (3, 4)
    lo, hi = clip_range(mask, times, torch.tensor([[50.0, 60.0]]))
    assert (lo.item(), hi.item()) == (7, 8)


# ---------------------------------------------------------------- evaluation = the base network


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_evaluation_uses_the_anchor_only_and_equals_the_base_network(task):
    full = _model(task, num_siamese=8).eval()
    base = _model(task, num_siamese=0).eval()
    missing, unexpected = base.load_state_dict(full.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"skg.weight", "skg.bias", "w1", "w2"}
    batch = _batch()
    with torch.no_grad():
        a, b = full(batch), base(batch)
    assert "aux_losses" not in a and "affinity" not in a
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the anchor's rows are the deterministic centred clip
    lo, hi = clip_range(batch["frames_mask"])
    idx, valid = sample_clips(lo, hi, clip_frames=TINY.clip_frames, interval=TINY.frame_interval)
    assert torch.equal(a["frame_index"], idx[:, 0]) and torch.equal(a["frame_valid"], valid[:, 0])


@pytest.mark.parametrize("task,key,shape", [("open", "logits", (6, A)), ("mc", "scores", (6, C)),
                                            ("count", "count", (6,))])
def test_output_contract_and_frame_attention(task, key, shape):
    m = _model(task).eval()
    batch = _batch()
    before = {k: v.clone() for k, v in batch.items()}
    out = m(batch)
    assert out[key].shape == shape
    att = out["frame_attention"]
    assert att.shape == ((6, C, 4) if task == "mc" else (6, 4))
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]))
    valid = out["frame_valid"] if task != "mc" else out["frame_valid"][:, None].expand_as(att)
    assert (att[~valid] < 1e-6).all()  # padded / repeated frames get no attention
    for k in before:
        assert torch.equal(before[k], batch[k]), k


def test_question_is_encoded_once_per_question_not_per_clip():
    m = _model("mc", num_siamese=8).train()
    calls = []
    m.text.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    m(_batch(B=3))
    assert calls == [3, 3 * C]  # the question, then the candidates; never x (N + 1) clips


# ---------------------------------------------------------------- ablations and training


@pytest.mark.parametrize("changes", [
    {"num_siamese": 0}, {"knowledge": "uniform"}, {"knowledge": "skg"}, {"num_siamese": 1},
    {"num_siamese": 12},
], ids=["base", "skr-uniform", "skg+skr", "N=1", "N=12"])
def test_each_ablation_trains_a_step(changes):
    m = _model("open", **changes).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    batch = _batch()
    losses = compute_losses("open", m(batch), batch)
    assert ("loss_siamese" in losses) == (m.cfg.num_siamese > 0)
    sum(losses.values()).backward()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt.step()
    changed = {n for n, p in m.named_parameters() if not torch.equal(before[n], p)}
    assert "head.3.weight" in changed
    if m.cfg.num_siamese > 0:
        assert {"w1", "w2"} <= changed  # the fusion learns from L_siamese
    if m.cfg.num_siamese > 1 and m.cfg.knowledge == "skg":
        assert "skg.weight" in changed  # so does SKG's projection (with K = 2 each row has one entry)
    if changes.get("knowledge") == "uniform":
        assert "skg.weight" not in changed and {"w1", "w2"} <= changed


@pytest.mark.parametrize("task", ["open", "mc", "count"])
def test_overfits_a_small_batch(task):
    torch.manual_seed(0)
    B, T = 8, 10
    batch = _batch(B=B, T=T)
    batch["frames_mask"][:] = True
    cls = torch.arange(B) % 4
    batch["frames"] = torch.randn(B, T, D) * 0.1
    batch["frames"][torch.arange(B), :, cls] += 2.0  # the class is visible in every frame
    batch["question"][:] = 3
    batch["question_len"][:] = 5
    if task == "mc":  # candidate k names class k, in a shuffled order per question
        perm = torch.stack([torch.randperm(C) for _ in range(B)])
        batch["candidates"] = (perm + 5)[..., None].expand(-1, -1, 3).clone()
        batch["candidates_len"][:] = 3
        batch["answer"] = (perm == cls[:, None]).long().argmax(1)
    elif task == "count":
        batch["answer"] = (cls + 1).float()
    else:
        batch["answer"] = cls
    m = _model(task).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        losses = compute_losses(task, m(batch), batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        out = m(batch)
    if task == "count":
        assert torch.allclose(out["count"], batch["answer"], atol=0.4), out["count"]
    else:
        key = "logits" if task == "open" else "scores"
        assert (out[key].argmax(1) == batch["answer"]).all()


# ---------------------------------------------------------------- subtitles (How2QA)


def test_subtitles_are_read_with_the_question():
    m = _model("mc").eval()
    batch = _batch(B=3)
    g = torch.Generator().manual_seed(5)
    with_sub = {**batch, "subtitle": torch.randint(1, V, (3, 6), generator=g),
                "subtitle_len": torch.tensor([6, 2, 0])}
    calls = []
    hook = m.text.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    with torch.no_grad():
        a, b = m(batch), m(with_sub)
    hook.remove()
    assert calls[-1] == (3, 6)  # one more pass of the question encoder, once per question (not per clip)
    assert not torch.allclose(a["scores"][:2], b["scores"][:2])  # questions with subtitle text read it
    torch.testing.assert_close(a["scores"][2], b["scores"][2])  # no subtitle text: as without subtitles
    off = _model("mc", use_subtitles=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(off(with_sub)["scores"], off(batch)["scores"])


@pytest.mark.parametrize("use_subtitles", [True, False])
def test_an_answer_only_the_subtitles_give(use_subtitles):
    torch.manual_seed(0)
    B = 8
    batch = _batch(B=B, T=6)
    batch["frames"] = torch.randn(1, 6, D).expand(B, -1, -1).clone()  # the same video for every question
    batch["frames_mask"][:] = True
    batch["question"][:], batch["question_len"][:] = 3, 5
    batch["answer"] = torch.arange(B) % A
    batch["subtitle"] = (batch["answer"] + 10)[:, None].repeat(1, 3)  # the subtitle names the answer
    batch["subtitle_len"] = torch.full((B,), 3)
    m = _model("open", use_subtitles=use_subtitles).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        losses = compute_losses("open", m(batch), batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    with torch.no_grad():
        acc = (m.eval()(batch)["logits"].argmax(1) == batch["answer"]).float().mean()
    assert acc == 1.0 if use_subtitles else acc <= 0.25, acc


# ---------------------------------------------------------------- config and registry


def test_paper_defaults_and_registry():
    cfg = SiaSamReaConfig()
    assert (cfg.num_siamese, cfg.alpha, cfg.omega, cfg.knowledge) == (8, 1.0, 0.5, "skg")
    assert (cfg.knowledge_loss, cfg.use_subtitles) == ("gt", True)
    entry = get_model("siasamrea")
    assert entry.feature_set == "siasamrea" and entry.config_cls is SiaSamReaConfig
    assert set(entry.task_types) == {"open", "mc", "count"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("field,value,match", [
    ("omega", 1.5, "omega"), ("num_siamese", -1, "num_siamese"), ("knowledge", "x", "knowledge"),
    ("hidden_dim", 15, "hidden_dim"), ("alpha", -1.0, "alpha"), ("clip_frames", 0, "clip_frames"),
    ("eval_clips", 0, "eval_clips"), ("knowledge_loss", "x", "knowledge_loss"),
    ("subtitle_max_len", 0, "subtitle_max_len"),
])
def test_invalid_config_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        SiaSamReaConfig(**{field: value})


def test_wrong_feature_size_is_a_clear_error():
    m = _model("open").eval()
    batch = _batch()
    batch["frames"] = torch.randn(6, 12, D + 1)
    with pytest.raises(ValueError, match="frames_dim"):
        m(batch)


# ---------------------------------------------------------------- the model-file convention
def test_keyword_fields_build_what_the_builder_builds_and_bad_settings_are_refused():
    """As MSPAN: the network takes its settings as keyword-only fields, the builder checks its config's
    type and passes the fields; an unknown or out-of-range field is refused before anything is built."""
    from models.siasamrea import SiaSamRea

    fields = {f: getattr(TINY, f) for f in TINY.__dataclass_fields__}
    torch.manual_seed(0)
    direct = SiaSamRea(vocab_size=V, num_answers=A, task_type="open", **fields).eval()
    built = _model("open").eval()
    assert direct.cfg == TINY
    for (name, a), (_, b) in zip(direct.state_dict().items(), built.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="SiaSamReaConfig"):
        siasamrea({"hidden_dim": 16}, vocab_size=V, num_answers=A, task_type="open")
    with pytest.raises(TypeError, match="hidden_size"):
        SiaSamRea(vocab_size=V, num_answers=A, task_type="open", hidden_size=16)
    with pytest.raises(ValueError):
        SiaSamRea(vocab_size=V, num_answers=A, task_type="open", **{**fields, "num_siamese": -1})
    with pytest.raises(TypeError):
        SiaSamRea(TINY, vocab_size=V, num_answers=A, task_type="open")  # no positional config
