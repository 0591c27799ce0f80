"""Losses and metrics per task type on hand-made outputs."""

from __future__ import annotations

import math

import pytest
import torch

from train.tasks import compute_losses, compute_metrics, predict
from train.tasks.qa_losses import count_rounded, hinge_loss, open_ended_loss


def _batch(answer, qtypes=None, texts=None):
    n = len(answer)
    b = {"qid": [f"q{i}" for i in range(n)], "video_id": [f"v{i}" for i in range(n)], "answer": answer}
    if qtypes is not None:
        b["qtype"] = qtypes
    if texts is not None:
        b["answer_text"] = texts
    return b


def test_open_ended_loss_ignores_oov_targets():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, -5.0, 0.0]], requires_grad=True)
    answer = torch.tensor([0, 1, -1])
    got = open_ended_loss(logits, answer)
    want = torch.nn.functional.cross_entropy(logits[:2], answer[:2])
    assert torch.allclose(got, want)
    got.backward()
    assert torch.all(logits.grad[2] == 0)  # the OOV row contributes nothing
    all_oov = open_ended_loss(logits, torch.tensor([-1, -1, -1]))
    assert all_oov.item() == 0.0 and all_oov.requires_grad


def test_hinge_loss_by_hand():
    scores = torch.tensor([[3.0, 2.5, 0.0], [0.0, 1.0, 0.2]])
    answer = torch.tensor([0, 2])
    # row 0: negatives 2.5, 0.0 vs 3.0 -> max(0, 1 - 0.5) + max(0, 1 - 3) = 0.5
    # row 1: negatives 0.0, 1.0 vs 0.2 -> max(0, 1 - 0.2) + max(0, 1 + 0.8) = 0.8 + 1.8 = 2.6
    assert hinge_loss(scores, answer, margin=1.0).item() == pytest.approx((0.5 + 2.6) / 2)
    assert hinge_loss(scores, answer, margin=0.0).item() == pytest.approx((0.0 + 0.8) / 2)
    losses = compute_losses("mc", {"scores": scores}, {"answer": answer})
    assert losses["loss_hinge"].item() == pytest.approx(1.55)


def official_masn_hinge(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A transcription of MASN's official ``embed_loss.MultipleChoiceLoss`` (margin 1, size_average)."""
    loss, cnt = torch.tensor(0.0), 0
    for b in range(score.size(0)):
        for c in range(score.size(1)):
            if c == target[b]:
                continue
            loss = loss + torch.max(torch.tensor(0.0), 1.0 + score[b, c] - score[b, target[b]])
            cnt += 1
    return loss / cnt


def test_hinge_mean_reduction_is_masns_official_scale():
    g = torch.Generator().manual_seed(0)
    scores, answer = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    official = official_masn_hinge(scores, answer)
    mean = hinge_loss(scores, answer, reduction="mean")
    assert mean.item() == pytest.approx(official.item(), rel=1e-6)
    assert hinge_loss(scores, answer).item() == pytest.approx(4 * official.item(), rel=1e-6)  # 4 negatives
    losses = compute_losses("mc", {"scores": scores}, {"answer": answer}, hinge_reduction="mean")
    assert losses["loss_hinge"].item() == pytest.approx(official.item(), rel=1e-6)
    with pytest.raises(ValueError, match="hinge reduction"):
        hinge_loss(scores, answer, reduction="max")


def test_count_loss_and_missing_output_key():
    out = compute_losses("count", {"count": torch.tensor([1.0, 3.0])}, {"answer": torch.tensor([2.0, 3.0])})
    assert out["loss_mse"].item() == pytest.approx(0.5)
    with pytest.raises(KeyError, match="must return 'logits'"):
        compute_losses("open", {"count": torch.zeros(2)}, {"answer": torch.zeros(2)})


@pytest.mark.parametrize("task,key,name", [("open", "logits", "loss_ce"), ("mc", "scores", "loss_hinge"),
                                           ("count", "count", "loss_mse")])
def test_every_sampled_clip_is_supervised_when_the_model_returns_them(task, key, name):
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(3, 4, 5, generator=g) if task != "count" else torch.randn(3, 4, generator=g)
    answer = torch.tensor([0, 4, 2]) if task != "count" else torch.tensor([1.0, 2.0, 3.0])
    batch = {"answer": answer}
    per_clip = [compute_losses(task, {key: clips[:, k]}, batch)[name] for k in range(4)]
    got = compute_losses(task, {key: clips[:, 0], f"clip_{key}": clips}, batch)
    torch.testing.assert_close(got[name], sum(per_clip) / 4)  # the mean over the K clips' losses
    assert set(got) == {name}


def test_open_metrics_oov_wrong_and_per_question_word():
    vocab = ["yes", "man", "dog"]
    logits = torch.tensor(
        [[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0], [9.0, 0, 0], [0, 9.0, 0]]
    )  # predictions: yes, man, dog, yes, man
    answer = torch.tensor([0, 1, 1, -1, 1])  # the 4th answer is out of vocabulary
    b = _batch(answer, ["how", "who", "who", "what", "what"], ["yes", "man", "man", "kayak", "man"])
    recs = predict("open", {"logits": logits}, b, answer_vocab=vocab)
    assert [r.prediction for r in recs] == ["yes", "man", "dog", "yes", "man"]
    assert recs[3].answer == "kayak" and recs[3].score == 0.0
    m = compute_metrics("open", recs)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["accuracy/how"] == 1.0 and m["accuracy/who"] == 0.5 and m["accuracy/what"] == 0.5
    assert m["num_questions"] == 5
    # a question seen twice (e.g. gathered from two processes) counts once
    assert compute_metrics("open", recs + recs[:1])["accuracy"] == pytest.approx(3 / 5)


def test_mc_accuracy():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.1], [0.0, 0.0, 1.0]])
    recs = predict("mc", {"scores": scores}, _batch(torch.tensor([1, 2, 2])))
    assert [r.prediction for r in recs] == [1, 0, 2]
    assert compute_metrics("mc", recs)["accuracy"] == pytest.approx(2 / 3)


def test_count_rounding_clamp_and_mse():
    raw = torch.tensor([0.2, 12.7, 3.4, 3.6, -4.0])
    assert count_rounded(raw).tolist() == [1, 10, 3, 4, 1]
    answer = torch.tensor([1.0, 10.0, 4.0, 4.0, 2.0])
    recs = predict("count", {"count": raw}, _batch(answer))
    assert [r.prediction for r in recs] == [1, 10, 3, 4, 1]
    assert recs[0].raw == pytest.approx(0.2)
    m = compute_metrics("count", recs)
    assert m["mse"] == pytest.approx((0 + 0 + 1 + 0 + 1) / 5)
    assert math.isnan(compute_metrics("count", [])["mse"])
