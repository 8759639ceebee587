"""KLong's advantage and the clipped policy-gradient loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from worker.training.rl_math import (
    advantage_spread,
    batch_advantages,
    clipped_pg_loss,
    staleness,
    task_advantages,
    too_stale,
)


def close(a, b) -> bool:
    return all(math.isclose(x, y, abs_tol=1e-12) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def test_advantage_is_q_minus_the_mean_over_n_times_k_subtrajectories():
    # n = 2 rollouts, K = 3 windows: mean = (0.1+0.2+0.3+0.5+0.6+0.7) / 6 = 0.4
    q = [[0.1, 0.2, 0.3], [0.5, 0.6, 0.7]]
    assert close(task_advantages(q), [[-0.3, -0.2, -0.1], [0.1, 0.2, 0.3]])


def test_advantage_is_not_divided_by_the_standard_deviation():
    # GRPO would scale these to unit variance; KLong does not: doubling Q doubles A.
    q = [[0.0, 0.5], [0.25, 0.25]]
    assert close(task_advantages(q), [[-0.25, 0.25], [0.0, 0.0]])
    assert close(task_advantages([[2 * v for v in row] for row in q]), [[-0.5, 0.5], [0.0, 0.0]])


def test_a_rollout_with_fewer_windows_counts_each_of_its_windows_once():
    # a rollout cut early has 1 window, the other 3: mean over the 4 sub-trajectories = 0.5
    assert close(task_advantages([[1.0], [0.0, 0.5, 0.5]]), [[0.5], [-0.5, 0.0, 0.0]])


def test_equal_scores_carry_no_advantage_and_tasks_are_separate_groups():
    out = batch_advantages({"a": [[1.0, 1.0], [1.0]], "b": [[0.0, 1.0]]})
    assert out == {"a": [[0.0, 0.0], [0.0]], "b": [[-0.5, 0.5]]}
    spread = advantage_spread(out)
    assert spread.zero_groups == 1 and spread.min == -0.5 and spread.max == 0.5
    assert math.isclose(spread.std, math.sqrt(0.5 * 0.5 * 2 / 5))


def test_a_score_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="rollout 1, sub-trajectory 0"):
        task_advantages([[0.5], [float("nan")]])
    assert task_advantages([[], []]) == [[], []]


def test_staleness_counts_updates_since_the_rollouts_policy():
    assert staleness(3, 5) == 2 and not too_stale(4, 5, 1) and too_stale(3, 5, 1)
    with pytest.raises(ValueError):
        staleness(6, 5)


def test_clipped_loss_matches_hand_computed_tokens():
    # four tokens of one row; eps = 0.2
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.0, 1.5, 0.5, 1.5]])
    logp = torch.log(ratios)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.tensor([[True, True, True, True]])
    loss, stats = clipped_pg_loss(logp, old, adv, mask, clip_eps=0.2)
    # per token -min(r*A, clip(r)*A): -1.0; -min(1.5, 1.2) = -1.2; -min(-0.5, -0.8) = 0.8; -min(-1.5, -1.2) = 1.5
    assert math.isclose(float(loss), (-1.0 - 1.2 + 0.8 + 1.5) / 4, rel_tol=1e-6)
    assert math.isclose(stats.clip_fraction, 0.75) and stats.tokens == 4


def test_masked_tokens_do_not_count_and_a_row_advantage_broadcasts():
    old = torch.zeros(2, 3)
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[True, True, False], [False, True, False]])
    loss, stats = clipped_pg_loss(logp, old, torch.tensor([2.0, -1.0]), mask, clip_eps=0.2)
    assert math.isclose(float(loss), (-2.0 - 2.0 + 1.0) / 3) and stats.tokens == 3


def test_kl_penalty_is_zero_at_the_reference_and_positive_away_from_it():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.zeros(1)
    loss, stats = clipped_pg_loss(logp, logp, adv, mask, clip_eps=0.2, kl_coef=0.1, ref_logp=logp.clone())
    assert float(loss) == 0.0 and stats.kl == 0.0
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    loss, stats = clipped_pg_loss(logp, logp, adv, mask, clip_eps=0.2, kl_coef=0.1, ref_logp=ref)
    # k3 = exp(d) - d - 1 with d = ref - logp: token 1 d = ln 0.5, token 2 d = 0
    expected = (0.5 - math.log(0.5) - 1) / 2
    assert math.isclose(stats.kl, expected, rel_tol=1e-6) and math.isclose(float(loss), 0.1 * expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        clipped_pg_loss(logp, logp, adv, mask, clip_eps=0.2, kl_coef=0.1)


def test_the_loss_gradient_raises_the_probability_of_positive_advantage_tokens():
    logits = torch.zeros(1, 2, requires_grad=True)
    logp = torch.log_softmax(logits, dim=-1)[:, :1]  # log P(token 0)
    loss, _ = clipped_pg_loss(logp, logp.detach(), torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool),
                              clip_eps=0.2)
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # a gradient step raises token 0's logit
