"""Trajectory splitting: the seven invariants of docs/klong-method.md as properties.

Each property test draws a random trajectory (token counts, roles, no-loss marks) and a
random config, plans the split, and checks one invariant against sums the test computes
itself. Example tests pin the markers, train_overlap_once and the automatic prefix rule.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apps.trajectories.splitting import (
    IGNORE_INDEX,
    SplitConfig,
    SplitError,
    SplitManifest,
    TurnSpec,
    Window,
    auto_prefix_end,
    build_example,
    mentions_paper,
    plan_split,
    render_window,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Sizes are a small-scale model of real runs (turns of 0 to 1,500 tokens against an L_max
# of 300 to 8,000), so the token-id tests stay fast; the planner only sees the ratios.
# Repeated sizes make turns of the same original length common (invariant 5).
turn_tokens = st.one_of(st.sampled_from([0, 1, 8, 40, 100, 300, 1000]), st.integers(0, 1500))
# one step: the action's tokens, whether it is marked no-loss, its observations
steps = st.tuples(
    turn_tokens,
    st.integers(0, 9).map(lambda x: x == 0),
    st.lists(st.tuples(st.sampled_from(["tool", "tool", "user"]), turn_tokens), max_size=2),
)


@st.composite
def trajectories(draw: st.DrawFn) -> list[TurnSpec]:
    rows: list[tuple[str, int, bool]] = []
    if draw(st.booleans()):
        rows.append(("system", draw(st.integers(0, 120)), False))
    if draw(st.integers(0, 9)):  # mostly a task, sometimes the run opens with an action
        rows.append(("user", draw(st.integers(0, 200)), False))
    for tokens, no_loss, observations in draw(st.lists(steps, max_size=30)):
        rows.append(("assistant", tokens, no_loss))
        rows.extend((role, count, False) for role, count in observations)
    reads = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    return [
        TurnSpec(i, role, tokens, no_loss=no_loss, reads_paper=reads[i])
        for i, (role, tokens, no_loss) in enumerate(rows)
    ]


@st.composite
def split_configs(draw: st.DrawFn, n_turns: int) -> SplitConfig:
    return SplitConfig(
        l_max=draw(st.integers(300, 8000)),
        prefix_end=draw(st.one_of(st.none(), st.integers(-1, min(n_turns - 1, 5)))),
        overlap_turns=draw(st.integers(0, 6)),
        history_budget=draw(st.one_of(st.integers(0, 2000), st.floats(0.0, 1.0, allow_nan=False))),
        recent_full_turns=draw(st.integers(0, 5)),
        decay=draw(st.floats(0.05, 1.0, allow_nan=False)),
        snippet_min_tokens=draw(st.integers(1, 100)),
        marker_tokens=draw(st.integers(0, 30)),
        train_overlap_once=draw(st.booleans()),
    )


@st.composite
def planned(draw: st.DrawFn) -> tuple[list[TurnSpec], SplitConfig, SplitManifest]:
    turns = draw(trajectories())
    config = draw(split_configs(len(turns)))
    try:
        manifest = plan_split(turns, config)
    except SplitError:
        assume(False)  # the prefix leaves no room: rejected, not a counter-example
        raise
    return turns, config, manifest


def history_room(manifest: SplitManifest, window: Window) -> int:
    """The history budget of a window, from the documented rule."""
    room = manifest.config.l_max - manifest.prefix_tokens
    return min(manifest.history_budget, room - window.target_tokens)


def target_budget_at(turns: list[TurnSpec], manifest: SplitManifest, start: int) -> int:
    """The documented target budget of a window whose targets begin at ``start``."""
    first = manifest.prefix_end + 1
    raw_history = sum(t.tokens for t in turns[first:start])
    room = manifest.config.l_max - manifest.prefix_tokens
    return room - min(manifest.history_budget, raw_history)


def turn_ids(turns: list[TurnSpec]) -> list[list[int]]:
    # every id names its turn and position, so a label can be traced to its source
    return [[(t.index + 1) * 1_000_000 + p for p in range(t.tokens)] for t in turns]


CUT_ID = 7_000_000_000
OMITTED_ID = 8_000_000_000


def example_for(
    ids: list[list[int]],
    manifest: SplitManifest,
    window: Window,
    loss_start: list[int] | None = None,
) -> tuple[list[int], list[int]]:
    marker = manifest.config.marker_tokens
    return build_example(
        ids,
        manifest,
        window.number,
        cut_marker_ids=lambda n: [CUT_ID] * marker,
        omitted_marker_ids=lambda n: [OMITTED_ID] * marker,
        loss_start=loss_start,
    )


def fake_cut(text: str, head: int, tail: int) -> tuple[str, str]:
    return f"<head {head} of {text}>", f"<tail {tail} of {text}>"


# --------------------------------------------------------------------------- invariant 1


@PROPERTY
@given(planned())
def test_every_window_fits_l_max_and_its_token_count_adds_up(case) -> None:
    turns, config, manifest = case
    m = config.marker_tokens
    ids = turn_ids(turns)
    for window in manifest.windows:
        kept = [k.kept + (m if k.cut else 0) for k in window.history]
        history = sum(kept) + (m if window.omitted_turns else 0)
        targets = sum(turns[i].tokens for i in window.target_turns)
        if window.target_cut is not None:
            targets += window.target_cut.kept + m - turns[window.target_cut.turn].tokens
        assert window.prefix_tokens == sum(t.tokens for t in turns[: manifest.prefix_end + 1])
        assert window.history_tokens == history
        assert window.target_tokens == targets
        assert window.total_tokens == window.prefix_tokens + history + targets
        assert window.total_tokens <= config.l_max
        input_ids, _ = example_for(ids, manifest, window)
        assert len(input_ids) == window.total_tokens


@PROPERTY
@given(planned())
def test_a_turn_longer_than_the_budget_is_cut_and_its_window_flagged(case) -> None:
    turns, config, manifest = case
    for window in manifest.windows:
        cut = window.target_cut
        assert window.overlong == (cut is not None)
        if cut is None:
            assert window.target_tokens <= window.target_budget
            continue
        assert window.target_start == window.target_end == cut.turn
        assert turns[cut.turn].tokens > window.target_budget
        assert cut.kept + config.marker_tokens == window.target_budget
        assert cut.kept_head + cut.kept_tail + cut.cut == turns[cut.turn].tokens


def test_a_single_huge_tool_output_is_cut_to_the_window() -> None:
    turns = [
        TurnSpec(0, "system", 50),
        TurnSpec(1, "user", 50),
        TurnSpec(2, "assistant", 20),
        TurnSpec(3, "tool", 50_000),
        TurnSpec(4, "assistant", 20),
    ]
    config = SplitConfig(l_max=1000, prefix_end=1, overlap_turns=0, marker_tokens=10)
    manifest = plan_split(turns, config)
    flagged = [w for w in manifest.windows if w.overlong]
    assert [w.target_cut.turn for w in flagged] == [3]
    assert all(w.total_tokens <= 1000 for w in manifest.windows)


# --------------------------------------------------------------------------- invariant 2


@PROPERTY
@given(planned())
def test_every_window_begins_with_the_prefix_verbatim(case) -> None:
    turns, _, manifest = case
    texts = [f"turn {t.index} text" for t in turns]
    ids = turn_ids(turns)
    prefix = list(range(manifest.prefix_end + 1))
    prefix_ids = [token for i in prefix for token in ids[i]]
    for window in manifest.windows:
        messages = render_window(texts, manifest, window.number, fake_cut)
        head = messages[: len(prefix)]
        assert [(m.turn, m.content, m.part) for m in head] == [(i, texts[i], "prefix") for i in prefix]
        assert all(m.part != "prefix" for m in messages[len(prefix) :])
        input_ids, labels = example_for(ids, manifest, window)
        assert input_ids[: len(prefix_ids)] == prefix_ids
        assert set(labels[: len(prefix_ids)]) <= {IGNORE_INDEX}


# --------------------------------------------------------------------------- invariant 3


@PROPERTY
@given(planned())
def test_every_assistant_turn_after_the_prefix_is_trained(case) -> None:
    turns, config, manifest = case
    trained: dict[int, int] = {}
    for window in manifest.windows:
        for i in window.loss_turns:
            trained[i] = trained.get(i, 0) + 1
    due = [t.index for t in turns if t.index > manifest.prefix_end and t.role == "assistant" and not t.no_loss]
    assert sorted(trained) == due
    if config.train_overlap_once:
        assert all(count == 1 for count in trained.values())


@PROPERTY
@given(planned())
def test_windows_cover_every_turn_after_the_prefix_in_order(case) -> None:
    turns, _, manifest = case
    covered: set[int] = set()
    for window in manifest.windows:
        covered.update(window.target_turns)
    assert covered == set(range(manifest.prefix_end + 1, len(turns)))
    starts = [w.target_start for w in manifest.windows]
    ends = [w.target_end for w in manifest.windows]
    assert starts == sorted(set(starts)) and ends == sorted(set(ends))
    assert [w.number for w in manifest.windows] == list(range(1, len(starts) + 1))


# --------------------------------------------------------------------------- invariant 4


@PROPERTY
@given(planned())
def test_adjacent_windows_overlap_by_the_configured_turns_where_possible(case) -> None:
    turns, config, manifest = case
    k = config.overlap_turns
    for before, after in zip(manifest.windows, manifest.windows[1:], strict=False):
        overlap = before.target_end - after.target_start + 1
        assert after.overlap_turns == overlap
        assert 0 <= overlap <= k
        if overlap == k:
            continue
        # less than configured: only because one more shared turn was impossible
        start_progress_limit = overlap == before.target_end - before.target_start
        one_more = after.target_start - 1
        needed = sum(t.tokens for t in turns[one_more : before.target_end + 2])
        over_budget = needed > target_budget_at(turns, manifest, one_more)
        assert start_progress_limit or over_budget


def test_uniform_trajectory_overlaps_by_exactly_the_configured_turns() -> None:
    turns = [TurnSpec(0, "system", 100), TurnSpec(1, "user", 100)]
    for _ in range(200):
        turns.append(TurnSpec(len(turns), "assistant", 50))
        turns.append(TurnSpec(len(turns), "tool", 150))
    config = SplitConfig(l_max=3000, prefix_end=1, overlap_turns=4)
    manifest = plan_split(turns, config)
    assert len(manifest.windows) > 10
    for before, after in zip(manifest.windows, manifest.windows[1:], strict=False):
        assert before.target_end - after.target_start + 1 == 4
        # windows end on the agent's action, the paper's [... s_e, a_e]
        assert turns[before.target_end].role == "assistant"


# --------------------------------------------------------------------------- invariant 5


@PROPERTY
@given(planned())
def test_older_history_turns_never_keep_more_than_recent_ones_of_equal_length(
    case,
) -> None:
    turns, config, manifest = case
    first = manifest.prefix_end + 1
    for window in manifest.windows:
        kept = {k.turn: k.kept for k in window.history}
        region = range(first, window.target_start)
        # the kept history is contiguous and ends right before the targets
        assert [k.turn for k in window.history] == list(region[window.omitted_turns :])
        for older in region:
            for newer in range(older + 1, window.target_start):
                if turns[older].tokens == turns[newer].tokens:
                    assert kept.get(older, 0) <= kept.get(newer, 0)
        for keep in window.history:
            assert keep.original == turns[keep.turn].tokens
            if keep.cut:
                assert keep.kept >= config.snippet_min_tokens


@PROPERTY
@given(planned())
def test_history_is_kept_whole_when_it_fits_its_budget(case) -> None:
    turns, _, manifest = case
    first = manifest.prefix_end + 1
    for window in manifest.windows:
        raw = sum(t.tokens for t in turns[first : window.target_start])
        if raw <= history_room(manifest, window):
            assert window.omitted_turns == 0
            assert all(k.cut == 0 for k in window.history)
        assert window.history_tokens <= history_room(manifest, window)


def test_truncation_is_progressive_over_a_long_uniform_history() -> None:
    turns = [TurnSpec(0, "system", 10), TurnSpec(1, "user", 10)]
    for _ in range(100):
        turns.append(TurnSpec(len(turns), "assistant", 1000))
        turns.append(TurnSpec(len(turns), "tool", 1000))
    config = SplitConfig(
        l_max=40_000,
        prefix_end=1,
        history_budget=12_000,
        recent_full_turns=2,
        decay=0.5,
        snippet_min_tokens=100,
        marker_tokens=10,
    )
    last = plan_split(turns, config).windows[-1]
    kept_newest_first = [k.kept for k in reversed(last.history)]
    # two recent turns whole, then caps 6000, 3000 (both above the turn), 1500 (turn
    # whole), 750, 375, 187, then the cap drops below snippet_min_tokens
    assert kept_newest_first == [1000, 1000, 1000, 1000, 1000, 750, 375, 187]
    assert last.omitted_turns == last.target_start - 2 - len(last.history)


def test_history_stops_at_the_depth_of_the_schedule_even_for_tiny_turns() -> None:
    turns = [TurnSpec(0, "system", 10), TurnSpec(1, "user", 10)]
    for _ in range(100):
        turns.append(TurnSpec(len(turns), "assistant", 10))
        turns.append(TurnSpec(len(turns), "tool", 10))
    config = SplitConfig(
        l_max=1000,
        prefix_end=1,
        history_budget=400,
        recent_full_turns=0,
        decay=0.5,
        snippet_min_tokens=40,
        marker_tokens=5,
    )
    second = plan_split(turns, config).windows[1]
    # caps 200, 100, 50, then 25 < snippet_min_tokens: the rest is omitted although
    # 10-token turns would still fit the budget
    assert [k.kept for k in second.history] == [10, 10, 10]
    assert second.omitted_turns == second.target_start - 2 - 3


# --------------------------------------------------------------------------- invariant 6


@PROPERTY
@given(planned(), st.data())
def test_loss_mask_is_exactly_the_assistant_tokens_of_the_loss_turns(case, data) -> None:
    turns, config, manifest = case
    loss_start = [data.draw(st.integers(0, 3)) for _ in turns]
    previous_end = manifest.prefix_end
    ids = turn_ids(turns)
    for window in manifest.windows:
        expected_loss = [
            i
            for i in window.target_turns
            if turns[i].role == "assistant"
            and not turns[i].no_loss
            and (not config.train_overlap_once or i > previous_end)
        ]
        assert list(window.loss_turns) == expected_loss
        previous_end = window.target_end

        input_ids, labels = example_for(ids, manifest, window, loss_start)
        assert len(labels) == len(input_ids)
        trained_per_turn: dict[int, int] = {}
        for token, label in zip(input_ids, labels, strict=True):
            if token in (CUT_ID, OMITTED_ID):
                assert label == IGNORE_INDEX
                continue
            turn, position = divmod(token, 1_000_000)
            turn -= 1
            due = turn in window.loss_turns and position >= loss_start[turn]
            assert label == (token if due else IGNORE_INDEX)
            if due:
                trained_per_turn[turn] = trained_per_turn.get(turn, 0) + 1
        # every kept token of a loss turn past its header is trained, none is missed
        for i in window.loss_turns:
            cut = window.target_cut if window.target_cut and window.target_cut.turn == i else None
            positions = (
                list(range(cut.kept_head)) + list(range(cut.original - cut.kept_tail, cut.original))
                if cut
                else list(range(turns[i].tokens))
            )
            assert trained_per_turn.get(i, 0) == sum(p >= loss_start[i] for p in positions)


# --------------------------------------------------------------------------- invariant 7


@PROPERTY
@given(planned())
def test_same_input_gives_the_same_manifest_and_hash(case) -> None:
    turns, config, manifest = case
    again = plan_split(list(turns), config)
    assert again == manifest
    assert again.content_hash == manifest.content_hash
    assert len(manifest.content_hash) == 64
    loaded = SplitManifest.from_json(manifest.to_json())
    assert loaded == manifest
    assert loaded.to_json() == manifest.to_json()


@PROPERTY
@given(planned(), st.data())
def test_hash_changes_when_the_config_or_a_token_count_changes(case, data) -> None:
    turns, config, manifest = case
    changes = {
        "l_max": config.l_max + 1,
        "overlap_turns": config.overlap_turns + 1,
        "recent_full_turns": config.recent_full_turns + 1,
        "marker_tokens": config.marker_tokens + 1,
        "train_overlap_once": not config.train_overlap_once,
        "snippet_min_tokens": config.snippet_min_tokens + 1,
        "decay": config.decay / 2,
    }
    name = data.draw(st.sampled_from(sorted(changes)))
    try:
        changed = plan_split(turns, dataclasses.replace(config, **{name: changes[name]}))
    except SplitError:
        assume(False)
        raise
    assert changed.content_hash != manifest.content_hash
    if turns:
        bumped = list(turns)
        i = data.draw(st.integers(0, len(turns) - 1))
        bumped[i] = dataclasses.replace(turns[i], tokens=turns[i].tokens + 1)
        try:
            other = plan_split(bumped, config)
        except SplitError:
            return
        assert other.content_hash != manifest.content_hash


def test_a_tampered_manifest_is_refused() -> None:
    turns = [
        TurnSpec(0, "user", 10),
        TurnSpec(1, "assistant", 10),
        TurnSpec(2, "tool", 10),
    ]
    data = json.loads(plan_split(turns, SplitConfig(l_max=1000)).to_json())
    data["windows"][0]["loss_turns"] = []
    with pytest.raises(ValueError, match="content hash"):
        SplitManifest.from_json(data)


# --------------------------------------------------------------------------- examples


def long_run() -> list[TurnSpec]:
    turns = [TurnSpec(0, "system", 20), TurnSpec(1, "user", 30)]
    for _ in range(30):
        turns.append(TurnSpec(len(turns), "assistant", 100))
        turns.append(TurnSpec(len(turns), "tool", 400))
    return turns


def test_render_window_shows_cut_and_omitted_markers() -> None:
    turns = long_run()
    config = SplitConfig(
        l_max=2000,
        prefix_end=1,
        history_budget=600,
        recent_full_turns=1,
        snippet_min_tokens=50,
        marker_tokens=10,
    )
    manifest = plan_split(turns, config)
    window = manifest.windows[-1]
    assert window.omitted_turns > 0
    texts = [f"text {i}" for i in range(len(turns))]
    messages = render_window(texts, manifest, window.number, fake_cut)
    marker = messages[2]
    assert (marker.part, marker.role, marker.turn, marker.loss) == (
        "marker",
        "user",
        None,
        False,
    )
    assert marker.content == f"[{window.omitted_turns} earlier turns omitted]"
    cut = next(k for k in window.history if k.cut)
    message = next(m for m in messages if m.turn == cut.turn)
    assert message.content == (
        f"<head {cut.kept_head} of text {cut.turn}>\n"
        f"[... {cut.cut} tokens cut ...]\n"
        f"<tail {cut.kept_tail} of text {cut.turn}>"
    )
    assert message.cut_tokens == cut.cut
    targets = [m for m in messages if m.part == "target"]
    assert [m.turn for m in targets] == list(window.target_turns)
    assert [m.turn for m in targets if m.loss] == list(window.loss_turns)


def test_overlap_turns_are_trained_in_both_windows_by_default_and_once_on_request() -> None:
    turns = long_run()
    both = plan_split(turns, SplitConfig(l_max=2500, prefix_end=1, overlap_turns=2))
    once = plan_split(
        turns,
        SplitConfig(l_max=2500, prefix_end=1, overlap_turns=2, train_overlap_once=True),
    )
    first, second = both.windows[0], both.windows[1]
    shared = range(second.target_start, first.target_end + 1)
    shared_assistant = [i for i in shared if turns[i].role == "assistant"]
    assert shared_assistant
    assert set(shared_assistant) <= set(first.loss_turns) & set(second.loss_turns)
    assert once.windows[0].target_end == first.target_end  # same windows, other loss
    assert set(shared_assistant) <= set(once.windows[0].loss_turns)
    assert not set(shared_assistant) & set(once.windows[1].loss_turns)
    assert once.content_hash != both.content_hash


def test_no_loss_turns_are_never_trained() -> None:
    turns = long_run()
    turns[4] = dataclasses.replace(turns[4], no_loss=True)
    manifest = plan_split(turns, SplitConfig(l_max=2500, prefix_end=1))
    assert turns[4].role == "assistant"
    assert all(4 not in w.loss_turns for w in manifest.windows)
    assert manifest.turn_stats[4].loss_windows == ()
    assert manifest.turn_stats[4].target_windows


def test_a_prefix_that_leaves_no_room_is_an_error() -> None:
    turns = [
        TurnSpec(0, "system", 900),
        TurnSpec(1, "user", 90),
        TurnSpec(2, "assistant", 5),
    ]
    with pytest.raises(SplitError):
        plan_split(turns, SplitConfig(l_max=1000, prefix_end=1, marker_tokens=24))


def test_marker_longer_than_its_budget_is_refused() -> None:
    turns = long_run()
    manifest = plan_split(
        turns,
        SplitConfig(l_max=2000, prefix_end=1, history_budget=600, marker_tokens=4),
    )
    window = manifest.windows[-1]
    with pytest.raises(ValueError, match="marker_tokens"):
        build_example(
            turn_ids(turns),
            manifest,
            window.number,
            cut_marker_ids=lambda n: [1] * 5,
            omitted_marker_ids=lambda n: [2] * 5,
        )


# --------------------------------------------------------------------------- prefix rule


def reading_run() -> list[TurnSpec]:
    spec = [
        ("system", False),
        ("user", False),
        ("assistant", True),  # cat /home/paper/paper.md
        ("tool", True),
        ("assistant", False),  # ls
        ("tool", False),
        ("assistant", True),  # cat /home/paper/addendum.md
        ("tool", True),  # <- end of the paper-reading phase
        ("assistant", False),
        ("tool", False),
        ("assistant", False),
        ("tool", False),
        ("assistant", False),
        ("tool", False),
        ("assistant", True),  # a later re-read, after a gap: not the prefix
        ("tool", True),
        ("assistant", False),
    ]
    return [TurnSpec(i, role, 100, reads_paper=r) for i, (role, r) in enumerate(spec)]


def test_auto_prefix_runs_through_the_last_paper_read_before_a_gap() -> None:
    assert auto_prefix_end(reading_run(), SplitConfig(l_max=100_000)) == 7


def test_auto_prefix_is_at_least_system_and_task() -> None:
    turns = [TurnSpec(i, role, 10) for i, role in enumerate(["system", "user", "assistant", "tool", "assistant"])]
    assert auto_prefix_end(turns, SplitConfig()) == 1
    opens_with_action = [TurnSpec(0, "assistant", 10), TurnSpec(1, "tool", 10)]
    assert auto_prefix_end(opens_with_action, SplitConfig()) == -1


def test_auto_prefix_is_capped_by_a_fraction_of_l_max() -> None:
    # 750 tokens allowed: through the second read (8 turns, 800 tokens) does not fit,
    # so the prefix ends after the first read (4 turns), not after the "ls" step
    config = SplitConfig(l_max=1500, prefix_max_fraction=0.5)
    assert auto_prefix_end(reading_run(), config) == 3


def test_auto_prefix_never_pins_the_last_step() -> None:
    turns = [
        TurnSpec(0, "user", 10),
        TurnSpec(1, "assistant", 10, reads_paper=True),
        TurnSpec(2, "tool", 10, reads_paper=True),
    ]
    assert auto_prefix_end(turns, SplitConfig()) == 0
    assert plan_split(turns, SplitConfig(l_max=1000)).windows[0].loss_turns == (1,)


def test_plan_split_uses_the_auto_prefix_when_none_is_given() -> None:
    manifest = plan_split(reading_run(), SplitConfig(l_max=100_000))
    assert manifest.prefix_end == 7
    assert manifest.windows[0].target_start == 8


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("cat /home/paper/paper.md", True),
        ("sed -n 1,200p paper.md", True),
        ('open("paper.pdf")', True),
        ("cat addendum.md", True),
        ("ls /home/paper/", True),
        ("python train.py --epochs 3", False),
        ("the paper says lr=3e-4", False),
        ("cat /home/submission/paperwork.md", False),
    ],
)
def test_mentions_paper(text: str, reads: bool) -> None:
    assert mentions_paper(text) is reads
