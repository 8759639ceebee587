"""Token-in/token-out RL: windows train on the ids the sampler generated, with its log-probs, and the
update corrects for the sampler by truncated importance sampling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from apps.judging.llm.client import sampled_tokens
from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import IGNORE_INDEX, SplitConfig
from apps.trajectories.windows import TurnRow, loss_runs, split_examples
from worker.training.rl import Reporter, RLSettings, Stage, split_rollout, train_rl
from worker.training.rl_math import clipped_pg_loss
from worker.training.rl_toy import ToyJudge, ToyRunner, toy_tasks
from worker.training.tiny import build_tiny_model

WIDE = SplitConfig(l_max=400, prefix_end=1, overlap_turns=1, history_budget=64, marker_tokens=8, snippet_min_tokens=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = build_tiny_model(tmp_path_factory.mktemp("rl-tokens"))
    return folder, AutoTokenizer.from_pretrained(folder)


def targets(example) -> list[list[int]]:
    """The runs of trained ids of an example."""
    return [example.labels[start:end] for start, end in loss_runs(example.labels)]


def test_a_window_trains_on_the_sampled_ids_even_where_the_text_re_tokenises_differently(tiny):
    _, tokenizer = tiny
    renderer = renderer_for(tokenizer)
    eos = tokenizer.eos_token_id
    # "python" sampled letter by letter: the same text, ids the tokenizer would never produce
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "python"]
    assert tokenizer.encode("python", add_special_tokens=False) != spelled
    cut = tokenizer.encode(" reproduce", add_special_tokens=False)  # stopped at max_tokens: no end-of-turn
    rows = [TurnRow("system", "You are an agent."), TurnRow("user", "Write it."),
            TurnRow("assistant", "python", token_ids=(*spelled, eos), logprobs=(-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -0.5)),
            TurnRow("tool", "saved"),
            TurnRow("assistant", " reproduce", token_ids=tuple(cut), logprobs=tuple(-0.25 for _ in cut))]
    _, examples = split_examples(rows, WIDE, renderer)
    [example] = examples
    assert targets(example) == [[*spelled, eos], cut]
    # the sampler's log-probs sit on exactly those ids, nothing elsewhere
    known = [(i, v) for i, v in enumerate(example.sampler_logprobs) if v is not None]
    assert [example.input_ids[i] for i, _ in known] == [*spelled, eos, *cut]
    assert [v for _, v in known] == [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -0.5] + [-0.25] * len(cut)
    # the cut turn's end-of-turn token is context (the next turn needs it), never a target
    after_cut = max(i for i, _ in known) + 1
    assert example.input_ids[after_cut] == eos and example.labels[after_cut] == IGNORE_INDEX
    # without the sampled ids (the re-render way) the window trains on other ids
    plain = [TurnRow(r.role, r.text) for r in rows]
    _, [rendered] = split_examples(plain, WIDE, renderer)
    assert targets(rendered)[0] != [*spelled, eos] and rendered.sampler_logprobs is None


def test_toy_rollouts_are_trained_on_their_sampled_ids(tiny):
    from transformers import AutoModelForCausalLM

    from worker.training.rl import LocalPolicy

    folder, tokenizer = tiny
    policy = LocalPolicy(AutoModelForCausalLM.from_pretrained(folder), tokenizer)
    [task] = toy_tasks(1, max_turns=3, tokens_per_turn=8)
    rollout = ToyRunner().run(task, 0, 100_000.0, policy, seed=5)
    sampled = [list(t.token_ids) for t in rollout.turns if t.role == "assistant"]
    assert sampled and all(len(t.logprobs) == len(t.token_ids) for t in rollout.turns if t.role == "assistant")
    retokenised = [tokenizer.encode(t.text, add_special_tokens=False) for t in rollout.turns if t.role == "assistant"]
    assert retokenised != [ids[:len(r)] for ids, r in zip(sampled, retokenised, strict=True)]  # the trap is real
    trained = [run for s in split_rollout(rollout, WIDE, renderer_for(tokenizer)) for run in targets(s.example)]
    assert trained and all(run in sampled for run in trained)


def test_chat_completion_choices_give_their_sampled_ids_and_log_probs():
    vllm_ids = {"token_ids": [5, 6, 2], "logprobs": {"content": [
        {"token": "token_id:5", "logprob": -0.1}, {"token": "token_id:6", "logprob": -0.2},
        {"token": "token_id:2", "logprob": -0.3}]}}
    assert sampled_tokens(vllm_ids) == ([5, 6, 2], [-0.1, -0.2, -0.3])
    named_only = {"logprobs": vllm_ids["logprobs"]}
    assert sampled_tokens(named_only) == ([5, 6, 2], [-0.1, -0.2, -0.3])
    # text tokens only (no ids): nothing, never a guess by re-tokenising
    assert sampled_tokens({"logprobs": {"content": [{"token": "hi", "logprob": -1.0}]}}) == ([], [])
    assert sampled_tokens({"token_ids": [1, "2"]}) == ([], [])


def test_truncated_importance_sampling_weights_each_token_by_the_capped_ratio():
    logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    # pi_old / pi_sampler = e^0.5, e^2 (capped at 2), 1, and unknown (weight 1)
    sampler = torch.tensor([[-1.5, -3.0, -1.0, float("nan")]])
    mask = torch.tensor([[True, True, True, True]])
    advantages = torch.tensor([1.0])
    loss, stats = clipped_pg_loss(logp, old, advantages, mask, clip_eps=0.2, sampler_logp=sampler, tis_cap=2.0)
    # ratio 1 everywhere: per-token loss -A * w
    assert float(loss.detach()) == pytest.approx(-(math.exp(0.5) + 2.0 + 1.0 + 1.0) / 4)
    assert stats.sampler_mismatch == pytest.approx((0.5 + 2.0 + 0.0) / 3)
    assert stats.tis_capped_fraction == pytest.approx(1 / 3) and stats.sampled_tokens == 3
    loss.backward()
    assert logp.grad[0, 1] == pytest.approx(-2.0 / 4)  # the weight is detached: a constant factor
    plain, plain_stats = clipped_pg_loss(logp, old, advantages, mask, clip_eps=0.2)
    assert float(plain.detach()) == pytest.approx(-1.0) and plain_stats.sampled_tokens == 0


class Points(Reporter):
    def __init__(self) -> None:
        self.points: list[dict] = []
        self.messages: list[str] = []

    def metric(self, step: int, **values: float) -> None:
        self.points.append(values)

    def progress(self, done: int, total: int, message: str) -> None:
        self.messages.append(message)


def test_an_iteration_reports_the_sampler_trainer_mismatch(tiny, tmp_path):
    folder, _ = tiny

    def one_iteration(precision: str) -> tuple[dict, Points]:
        points = Points()
        settings = RLSettings(policy=str(folder), output_dir=tmp_path / precision, stages=(Stage(100_000.0, 1),),
                              n_rollouts=2, split=WIDE, learning_rate=1e-3, partial_rollouts=False, tis_cap=2.0,
                              precision=precision)
        # one assistant turn: the window's context is exactly the sampler's (from the second turn on,
        # the toy's prompt re-tokenises the first turn's text, a context the window does not have)
        train_rl(settings, toy_tasks(1, max_turns=1, tokens_per_turn=6), ToyRunner(), ToyJudge(), points)
        [point] = points.points
        return point, points

    point, points = one_iteration("fp32")
    # the same fp32 weights sampled and scored the same tokens (in a window that is the whole
    # rollout): the mismatch is float noise, nothing is capped
    assert 0.0 <= point["sampler_mismatch"] < 1e-4 and point["tis_capped_fraction"] == 0.0
    # the job page's progress line counts the pool's sessions by state
    assert point["rollouts_done"] == 2.0 and point["rollouts_failed"] == 0.0
    assert points.messages[-1].endswith("rollouts 0 running (0 on the model, 0 on tools, 0 paused), 2 done, 0 failed")
    # the trainer under bf16 autocast against the fp32 sampler: a real mismatch, measured
    bf16, _ = one_iteration("bf16")
    assert bf16["sampler_mismatch"] > 10 * point["sampler_mismatch"] and bf16["sampler_mismatch"] > 1e-4
    assert Path(tmp_path, "bf16", "stage-1", "config.json").is_file()
