"""Trajectory splitting for KLong SFT: a pure planner, no Django, no torch.

A trajectory tau = (s_1, a_1, ..., s_N, a_N) is longer than the context limit L_max, so it
is cut into K overlapping windows (../shared/docs/klong-method.md, "Trajectory-splitting
SFT"):

    input_i = [p, h_i, s_{t_i}, a_{t_i}, ..., s_{e_i}, a_{e_i}]

The planner works on token counts only (``TurnSpec``); the web view, the SFT job, the RL
splitter and the benchmark all call ``plan_split`` and get the same ``SplitManifest``.
``render_window`` and ``build_example`` turn a manifest back into what the model sees
(messages, or input_ids + labels).

Semantics (the project's own where the paper is vague):

Turns and prefix
    A turn is one message (system, user, assistant or tool). The pinned prefix p is turns
    ``0..prefix_end`` (inclusive; -1 means no prefix). It appears verbatim at the start of
    every window and never carries loss. ``prefix_end=None`` picks it with
    ``auto_prefix_end`` (see there for the rule).

Targets
    Each window owns the contiguous turns ``target_start..target_end`` (its s_t..a_e).
    Windows are packed greedily: as many turns as fit the window's *target budget*,
    L_max - prefix - min(history budget, raw tokens of the turns between prefix and
    target_start): the history is reserved what it can use at most. A window that does not
    reach the end of the trajectory is shortened to end on an assistant turn when one of its
    new turns is one, so that it has the paper's shape [... s_e, a_e] and no window ends on
    a lone observation.

Overlap (counted in turns, of any role)
    overlap(i, i+1) = target_end_i - target_start_{i+1} + 1: the number of turns that are
    target turns of both window i and window i+1 (they are not history in window i+1, they
    are seen verbatim). It equals ``overlap_turns`` except where the trajectory does not allow
    it, and then it is the largest value that does:
    - window i+1 must start after window i (target_start strictly increases), so the overlap
      is at most (number of target turns of window i) - 1;
    - the overlap turns plus the first new turn must fit window i+1's target budget.

History (progressive truncation)
    h_i is built from the turns between the prefix and target_start, walking back from the
    most recent. Its budget is B = min(history budget, L_max - prefix - target tokens). If
    the whole history fits, it is kept in full. Otherwise one omitted-turns marker is reserved
    and, at distance d (d = 1 is the turn just before the targets):
    - a turn with d <= recent_full_turns is kept whole if it still fits;
    - otherwise it keeps at most cap(d) = floor(B * decay ** max(1, d - recent_full_turns))
      tokens (kept whole if it is no longer than the cap and fits), cut into a head and a
      tail snippet (head = ceil(kept / 2)) with a "[... N tokens cut ...]" marker;
    - the walk stops at the first turn that cannot keep at least snippet_min_tokens, or once
      cap(d) < snippet_min_tokens (the depth of the schedule, even for tiny turns); that
      turn and every older one are dropped and announced by one "[N earlier turns omitted]"
      marker. The kept history is therefore always a contiguous run ending at
      target_start - 1.
    Both the cap and the budget left only shrink going back, so an older turn never keeps
    more than a more recent one of the same original length (invariant 5).

Overlong turns
    A single new turn longer than the window's target budget is cut (head + tail + marker)
    to fill that budget exactly; the window holds only that turn and is flagged ``overlong``.
    A cut assistant turn still carries loss on its kept head and tail, never on the marker.

Loss
    loss_turns of a window = its target assistant turns, minus ``no_loss`` turns, minus (with
    ``train_overlap_once``) the turns that window i-1 already owned. Default: overlap turns
    are trained in both windows, the paper's formula.

Token accounting
    total_tokens = prefix + history (kept tokens + one marker per cut turn + one marker if
    turns were omitted) + targets (a cut target counts kept + marker) <= L_max. Markers are
    budgeted at ``marker_tokens`` each; the marker a caller renders must not be longer.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Literal

from apps.core.domain import Invalid

ROLES = ("system", "user", "assistant", "tool")
SCHEMA_VERSION = 1
IGNORE_INDEX = -100  # the label value the loss ignores (PyTorch / HF convention)
CUT_MARKER = "[... {n} tokens cut ...]"
OMITTED_MARKER = "[{n} earlier turns omitted]"

# Paths an agent reads during the paper-reading phase (PaperBench mounts the paper under
# /home/paper: paper.md, paper.pdf, addendum.md). Matched on tool calls and tool results.
_PAPER_READ_RE = re.compile(r"(?i)(?:^|[\s/'\"`=(])paper(?:\.(?:md|pdf|txt|tex)\b|/)|\baddendum\.md\b")


class SplitError(Invalid, ValueError):
    """The trajectory cannot be split under this config (e.g. the prefix fills L_max)."""


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """What the planner needs to know about one turn.

    ``tokens`` is the token count of the turn as rendered (chat template included), so that
    the sum over a window is the length the model sees. ``reads_paper`` feeds the automatic
    prefix rule; set it with ``mentions_paper(text)`` when importing.
    """

    index: int
    role: str
    tokens: int
    no_loss: bool = False
    reads_paper: bool = False


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """How to split. Defaults suit a 32k-context base model and PaperBench-style runs.

    l_max: context limit in tokens; every window fits it.
    prefix_end: last turn index of the pinned prefix (inclusive), -1 for none, None = auto.
    overlap_turns: turns shared as targets by adjacent windows (see module docstring).
    history_budget: max tokens of the truncated history; an int is tokens, a float in
        [0, 1] a fraction of l_max. Clamped to half of what the prefix leaves, so targets
        always have room, and raised to one marker: 0 means no history, only the
        omitted-turns marker.
    recent_full_turns: most recent history turns kept whole while they fit.
    decay: ratio by which the per-turn cap shrinks per step back in history (0 < decay <= 1;
        1 means no progressive cut, the history is just the most recent turns that fit).
    snippet_min_tokens: a cut turn keeping fewer tokens than this is dropped instead, and
        the walk back stops there.
    marker_tokens: tokens reserved for each marker (cut, omitted turns).
    train_overlap_once: train each assistant turn in one window only (the first).
    prefix_max_fraction, prefix_scan_turns, prefix_max_gap: the automatic prefix rule.
    """

    l_max: int = 32768
    prefix_end: int | None = None
    overlap_turns: int = 2
    history_budget: int | float = 0.25
    recent_full_turns: int = 4
    decay: float = 0.5
    snippet_min_tokens: int = 32
    marker_tokens: int = 24
    train_overlap_once: bool = False
    prefix_max_fraction: float = 0.5
    prefix_scan_turns: int = 60
    prefix_max_gap: int = 2

    def __post_init__(self) -> None:
        def _int(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

        _int("l_max", 1)
        if self.prefix_end is not None:
            _int("prefix_end", -1)
        _int("overlap_turns", 0)
        _int("recent_full_turns", 0)
        _int("snippet_min_tokens", 1)
        _int("marker_tokens", 0)
        _int("prefix_scan_turns", 0)
        _int("prefix_max_gap", 0)
        budget = self.history_budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise TypeError(f"history_budget must be a number, got {budget!r}")
        if isinstance(budget, float) and not 0.0 <= budget <= 1.0:
            raise ValueError("history_budget as a float is a fraction of l_max in [0, 1]")
        if isinstance(budget, int) and budget < 0:
            raise ValueError("history_budget in tokens must be >= 0")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError("decay must be in (0, 1]")
        if not 0.0 < self.prefix_max_fraction <= 1.0:
            raise ValueError("prefix_max_fraction must be in (0, 1]")

    def history_budget_tokens(self) -> int:
        """The configured history budget in tokens, before clamping to the room left."""
        if isinstance(self.history_budget, float):
            return int(self.history_budget * self.l_max)
        return self.history_budget


@dataclass(frozen=True, slots=True)
class HistoryKeep:
    """What survives of one turn: its first ``kept_head`` and last ``kept_tail`` tokens.

    Used for history turns and for the cut target turn of an overlong window. A turn kept
    whole has kept_head == original and kept_tail == 0 (no marker).
    """

    turn: int
    kept_head: int
    kept_tail: int
    original: int

    @property
    def kept(self) -> int:
        return self.kept_head + self.kept_tail

    @property
    def cut(self) -> int:
        """Tokens cut out of the middle (0 when the turn is kept whole)."""
        return self.original - self.kept_head - self.kept_tail


@dataclass(frozen=True, slots=True)
class Window:
    """One sub-trajectory: [prefix, history, targets]. ``number`` counts from 1."""

    number: int
    target_start: int
    target_end: int
    history: tuple[HistoryKeep, ...]  # oldest first, ends at target_start - 1
    omitted_turns: int  # oldest history turns dropped, announced by one marker
    target_cut: HistoryKeep | None  # the cut turn of an overlong window
    prefix_tokens: int
    history_tokens: int  # kept tokens + markers
    target_tokens: int  # a cut target counts kept + marker
    total_tokens: int
    target_budget: int  # room the targets had (L_max - prefix - history reservation)
    overlap_turns: int  # target turns shared with the previous window
    loss_turns: tuple[int, ...]
    overlong: bool

    @property
    def target_turns(self) -> range:
        return range(self.target_start, self.target_end + 1)


@dataclass(frozen=True, slots=True)
class TurnStat:
    """One turn as the manifest records it: the spec fields plus where it ended up."""

    turn: int
    role: str
    tokens: int
    no_loss: bool
    reads_paper: bool
    in_prefix: bool
    target_windows: tuple[int, ...]
    loss_windows: tuple[int, ...]


@dataclass(frozen=True)
class SplitManifest:
    """The plan training jobs consume and record (with ``content_hash``).

    ``content_hash`` is the sha256 of a canonical JSON of the config, the resolved prefix
    end, every turn's (role, tokens, no_loss, reads_paper) and every window.
    """

    config: SplitConfig
    prefix_end: int  # resolved (auto or given); -1 = no prefix
    prefix_tokens: int
    history_budget: int  # effective, after clamping
    turns: tuple[TurnSpec, ...]
    windows: tuple[Window, ...]
    content_hash: str

    @cached_property
    def turn_stats(self) -> tuple[TurnStat, ...]:
        """Per turn: in the prefix or not, target of which windows, trained in which."""
        return _turn_stats(self.turns, self.prefix_end, self.windows)

    def window(self, number: int) -> Window:
        if not 1 <= number <= len(self.windows):
            raise KeyError(f"no window {number} (manifest has {len(self.windows)})")
        return self.windows[number - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "config": asdict(self.config),
            "prefix_end": self.prefix_end,
            "prefix_tokens": self.prefix_tokens,
            "history_budget_effective": self.history_budget,
            "turns": _turn_rows(self.turns),
            "windows": [dict(zip(_WINDOW_FIELDS, _window_row(w), strict=True)) for w in self.windows],
            "content_hash": self.content_hash,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> SplitManifest:
        """Load a manifest and check its content hash (a mismatch means it was altered)."""
        raw = json.loads(data) if isinstance(data, (str, bytes)) else data
        if raw.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unknown split manifest schema {raw.get('schema')!r}")
        config = SplitConfig(**raw["config"])
        turns = tuple(
            TurnSpec(i, role, tokens, bool(no_loss), bool(reads))
            for i, (role, tokens, no_loss, reads) in enumerate(raw["turns"])
        )
        windows = tuple(_window_from_dict(w) for w in raw["windows"])
        digest = _content_hash(config, raw["prefix_end"], turns, windows)
        if digest != raw.get("content_hash"):
            raise ValueError("split manifest content hash does not match its content")
        return cls(
            config=config,
            prefix_end=raw["prefix_end"],
            prefix_tokens=raw["prefix_tokens"],
            history_budget=raw["history_budget_effective"],
            turns=turns,
            windows=windows,
            content_hash=digest,
        )


# --------------------------------------------------------------------------- prefix rule


def mentions_paper(text: str) -> bool:
    """Whether a turn's text (tool call or result) reads the paper: the ``reads_paper`` hint."""
    return _PAPER_READ_RE.search(text) is not None


def auto_prefix_end(turns: Sequence[TurnSpec], config: SplitConfig | None = None) -> int:
    """The end of the paper-reading phase: the default pinned prefix.

    Rule, over *steps* (an assistant turn with the observations that follow it):
    1. at least the leading run of non-assistant turns (system prompt + task description);
       -1 if the trajectory opens with an assistant turn;
    2. extended step by step through the last step that reads the paper (a turn of the step
       has ``reads_paper``), looking at the first ``prefix_scan_turns`` turns after (1) and
       stopping once more than ``prefix_max_gap`` consecutive steps do not read it;
    3. cut back to the end of the last reading step whose prefix holds at most
       ``prefix_max_fraction * l_max`` tokens, never below (1).
    The step of the last assistant turn is never pinned, so something is left to train.
    The prefix so always ends just before an assistant turn (or at the end of the base).
    """
    config = config or SplitConfig()
    n = len(turns)
    base = -1
    while base + 1 < n and turns[base + 1].role != "assistant":
        base += 1

    # the last step is never pinned, so at least one assistant turn is left to train
    last_step = max((i for i, t in enumerate(turns) if t.role == "assistant"), default=n)
    end = base
    gap = 0
    read_ends: list[int] = []  # last index of each reading step, for the token cap
    i = base + 1
    scan_stop = min(last_step, base + 1 + config.prefix_scan_turns)
    while i < scan_stop:
        # one step: the assistant turn at i and the observations after it
        j = i + 1
        while j < n and turns[j].role != "assistant":
            j += 1
        if j > scan_stop:  # a step cut by the scan window is not counted
            break
        if any(t.reads_paper for t in turns[i:j]):
            end = j - 1
            read_ends.append(end)
            gap = 0
        else:
            gap += 1
            if gap > config.prefix_max_gap:
                break
        i = j

    cap = config.prefix_max_fraction * config.l_max
    tokens = sum(t.tokens for t in turns[: end + 1])
    if tokens <= cap:
        return end
    # shrink to the end of the last reading step that fits the cap
    for boundary in reversed([base, *read_ends[:-1]]):
        if sum(t.tokens for t in turns[: boundary + 1]) <= cap or boundary == base:
            return boundary
    return base


# --------------------------------------------------------------------------- planner


def plan_split(turns: Sequence[TurnSpec], config: SplitConfig) -> SplitManifest:
    """Split a trajectory (token counts only) into windows. Linear in turns plus windows.

    Raises SplitError when the prefix leaves no room for targets.
    """
    n = len(turns)
    roles: list[str] = []
    tokens: list[int] = []
    # one pass: validation, prefix sums (every range sum below is O(1)), the last
    # assistant turn at or before each index (window ends) and the trainable turns
    cum = [0] * (n + 1)
    last_assistant = [-1] * n
    trainable: list[int] = []  # assistant turns without no_loss, ascending
    running = 0
    latest = -1
    for position, turn in enumerate(turns):
        role = turn.role
        if turn.index != position:
            raise ValueError(f"turn at position {position} has index {turn.index}")
        if role not in ROLES:
            raise ValueError(f"turn {position}: role {role!r} is not one of {ROLES}")
        if turn.tokens < 0:
            raise ValueError(f"turn {position}: negative token count")
        roles.append(role)
        tokens.append(turn.tokens)
        running += turn.tokens
        cum[position + 1] = running
        if role == "assistant":
            latest = position
            if not turn.no_loss:
                trainable.append(position)
        last_assistant[position] = latest

    prefix_end = auto_prefix_end(turns, config) if config.prefix_end is None else config.prefix_end
    if prefix_end >= n:
        raise SplitError(f"prefix_end {prefix_end} is past the last turn ({n - 1})")

    first = prefix_end + 1
    prefix_tokens = cum[first]
    marker = config.marker_tokens
    room = config.l_max - prefix_tokens
    # the history may never take more than half the room, so targets always get some; and
    # it is never below one marker, so dropped turns can always be announced
    budget_h = max(min(config.history_budget_tokens(), room // 2), marker)
    if room - budget_h <= marker:
        raise SplitError(
            f"the prefix ({prefix_tokens} tokens) leaves {room} of l_max={config.l_max}: too little for a target turn"
        )

    def target_budget(start: int) -> int:
        # reserve for the history what it can use at most: min(budget, its raw size)
        return room - min(budget_h, cum[start] - cum[first])

    windows: list[Window] = []
    prev_start = prev_end = -1
    # with train_overlap_once: turns <= owned_until were trained by an earlier window
    owned_until = prefix_end
    while (prev_end if windows else first - 1) < n - 1:
        new_from = prev_end + 1 if windows else first
        # the largest overlap (smallest start) whose turns plus the first new turn fit
        start = max(prev_start + 1, new_from - config.overlap_turns) if windows else first
        through_new = cum[new_from + 1]
        while start < new_from and through_new - cum[start] > target_budget(start):
            start += 1
        budget_t = target_budget(start)

        target_cut: HistoryKeep | None = None
        if cum[new_from + 1] - cum[start] > budget_t:
            # one turn alone exceeds the budget: cut it to fill the budget exactly
            end = new_from
            kept = budget_t - marker
            target_cut = HistoryKeep(end, kept - kept // 2, kept // 2, tokens[end])
            target_tokens = budget_t
        else:
            end = bisect_right(cum, cum[start] + budget_t) - 2
            if end < n - 1 and roles[end] != "assistant" and last_assistant[end] >= new_from:
                end = last_assistant[end]
            target_tokens = cum[end + 1] - cum[start]

        history, omitted, history_tokens = _plan_history(
            tokens, cum, first, start, min(budget_h, room - target_tokens), config
        )
        loss_from = max(start, owned_until + 1) if config.train_overlap_once else start
        loss_turns = tuple(trainable[bisect_left(trainable, loss_from) : bisect_right(trainable, end)])
        windows.append(
            Window(
                number=len(windows) + 1,
                target_start=start,
                target_end=end,
                history=history,
                omitted_turns=omitted,
                target_cut=target_cut,
                prefix_tokens=prefix_tokens,
                history_tokens=history_tokens,
                target_tokens=target_tokens,
                total_tokens=prefix_tokens + history_tokens + target_tokens,
                target_budget=budget_t,
                overlap_turns=max(0, prev_end - start + 1) if len(windows) else 0,
                loss_turns=loss_turns,
                overlong=target_cut is not None,
            )
        )
        prev_start, prev_end = start, end
        owned_until = end

    window_tuple = tuple(windows)
    turn_tuple = tuple(turns)
    return SplitManifest(
        config=config,
        prefix_end=prefix_end,
        prefix_tokens=prefix_tokens,
        history_budget=budget_h,
        turns=turn_tuple,
        windows=window_tuple,
        content_hash=_content_hash(config, prefix_end, turn_tuple, window_tuple),
    )


def _plan_history(
    tokens: list[int],
    cum: list[int],
    first: int,
    start: int,
    budget: int,
    config: SplitConfig,
) -> tuple[tuple[HistoryKeep, ...], int, int]:
    """Progressively truncated history for targets starting at ``start``.

    Returns (kept turns oldest first, omitted count, tokens incl. markers). The walk back
    stops at the first turn that cannot keep snippet_min_tokens, so its length is bounded
    by recent_full_turns + log(budget / snippet_min) / log(1 / decay) plus the whole turns
    that fit: never the whole trajectory.
    """
    raw = cum[start] - cum[first]
    if raw <= budget:
        whole = tuple(HistoryKeep(i, tokens[i], 0, tokens[i]) for i in range(first, start))
        return whole, 0, raw

    marker = config.marker_tokens
    recent = config.recent_full_turns
    decay = config.decay
    floor_tokens = config.snippet_min_tokens
    left = budget - marker  # one omitted-turns marker, reserved up front
    kept_rev: list[HistoryKeep] = []
    used = 0
    i = start - 1
    distance = 1
    while i >= first:
        original = tokens[i]
        if distance <= recent and original <= left:
            kept_rev.append(HistoryKeep(i, original, 0, original))
            left -= original
            used += original
        else:
            cap = int(budget * decay ** max(1, distance - recent))
            if cap < floor_tokens:
                break  # past the depth of the schedule: everything older is omitted
            if original <= cap and original <= left:
                kept_rev.append(HistoryKeep(i, original, 0, original))
                left -= original
                used += original
            else:
                keep = min(original, cap, left - marker)
                if keep < floor_tokens:
                    break
                kept_rev.append(HistoryKeep(i, keep - keep // 2, keep // 2, original))
                left -= keep + marker
                used += keep + marker
        i -= 1
        distance += 1
    omitted = i - first + 1
    if omitted:
        used += marker
    kept_rev.reverse()
    return tuple(kept_rev), omitted, used


def _turn_stats(turns: Sequence[TurnSpec], prefix_end: int, windows: Sequence[Window]) -> tuple[TurnStat, ...]:
    target_in: list[list[int]] = [[] for _ in turns]
    loss_in: list[list[int]] = [[] for _ in turns]
    for w in windows:
        for i in range(w.target_start, w.target_end + 1):
            target_in[i].append(w.number)
        for i in w.loss_turns:
            loss_in[i].append(w.number)
    return tuple(
        TurnStat(
            t.index,
            t.role,
            t.tokens,
            t.no_loss,
            t.reads_paper,
            t.index <= prefix_end,
            tuple(target_in[t.index]),
            tuple(loss_in[t.index]),
        )
        for t in turns
    )


# --------------------------------------------------------------------------- hashing / JSON


# Window fields in the order of the compact rows the hash is computed over.
_WINDOW_FIELDS = tuple(f.name for f in fields(Window))


def _keep_row(keep: HistoryKeep) -> list[int]:
    return [keep.turn, keep.kept_head, keep.kept_tail, keep.original]


def _window_row(w: Window) -> list[Any]:
    # spelled out rather than via dataclasses.fields(): this runs once per window on
    # every plan, and a 1,000-turn plan must stay under 20 ms
    return [
        w.number,
        w.target_start,
        w.target_end,
        [_keep_row(k) for k in w.history],
        w.omitted_turns,
        None if w.target_cut is None else _keep_row(w.target_cut),
        w.prefix_tokens,
        w.history_tokens,
        w.target_tokens,
        w.total_tokens,
        w.target_budget,
        w.overlap_turns,
        list(w.loss_turns),
        w.overlong,
    ]


def _window_from_dict(data: dict[str, Any]) -> Window:
    values = dict(data)
    values["history"] = tuple(HistoryKeep(*k) for k in data["history"])
    cut = data["target_cut"]
    values["target_cut"] = None if cut is None else HistoryKeep(*cut)
    values["loss_turns"] = tuple(data["loss_turns"])
    return Window(**values)


def _turn_rows(turns: Sequence[TurnSpec]) -> list[list[Any]]:
    return [[t.role, t.tokens, t.no_loss, t.reads_paper] for t in turns]


def _content_hash(
    config: SplitConfig,
    prefix_end: int,
    turns: Sequence[TurnSpec],
    windows: Sequence[Window],
) -> str:
    # compact rows keep the canonical JSON of a 1,000-window plan small and fast to hash;
    # window_fields is hashed too, so a change of layout changes every hash
    canonical = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "config": asdict(config),
            "prefix_end": prefix_end,
            "turns": _turn_rows(turns),
            "window_fields": _WINDOW_FIELDS,
            "windows": [_window_row(w) for w in windows],
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One message the model sees in a window. ``turn`` is None for a marker message."""

    turn: int | None
    role: str
    content: str
    part: Literal["prefix", "history", "marker", "target"]
    loss: bool
    cut_tokens: int = 0


def render_window(
    texts: Sequence[str],
    manifest: SplitManifest,
    window_number: int,
    cut: Callable[[str, int, int], tuple[str, str]],
    *,
    cut_marker: str = CUT_MARKER,
    omitted_marker: str = OMITTED_MARKER,
    marker_role: str = "user",
) -> list[RenderedMessage]:
    """The message list of one window: prefix verbatim, history with markers, targets.

    ``cut(text, head_tokens, tail_tokens)`` returns the text of the first head_tokens and
    the last tail_tokens tokens (it owns the tokenizer). A cut turn's content is
    head + "\\n" + marker + "\\n" + tail. The omitted-turns marker is its own message with
    ``marker_role``, placed right after the prefix, so chat templates see ordinary roles.
    """
    if len(texts) != len(manifest.turns):
        raise ValueError(f"{len(texts)} texts for {len(manifest.turns)} turns")
    window = manifest.window(window_number)
    roles = [t.role for t in manifest.turns]
    loss = set(window.loss_turns)

    def cut_text(keep: HistoryKeep) -> tuple[str, int]:
        if keep.cut == 0:
            return texts[keep.turn], 0
        head, tail = cut(texts[keep.turn], keep.kept_head, keep.kept_tail)
        return f"{head}\n{cut_marker.format(n=keep.cut)}\n{tail}", keep.cut

    messages = [RenderedMessage(i, roles[i], texts[i], "prefix", False) for i in range(manifest.prefix_end + 1)]
    if window.omitted_turns:
        text = omitted_marker.format(n=window.omitted_turns)
        messages.append(RenderedMessage(None, marker_role, text, "marker", False))
    for keep in window.history:
        content, cut_count = cut_text(keep)
        messages.append(RenderedMessage(keep.turn, roles[keep.turn], content, "history", False, cut_count))
    for i in window.target_turns:
        if window.target_cut is not None and window.target_cut.turn == i:
            content, cut_count = cut_text(window.target_cut)
        else:
            content, cut_count = texts[i], 0
        messages.append(RenderedMessage(i, roles[i], content, "target", i in loss, cut_count))
    return messages


def build_example(
    token_ids_per_turn: Sequence[Sequence[int]],
    manifest: SplitManifest,
    window_number: int,
    *,
    cut_marker_ids: Callable[[int], Sequence[int]],
    omitted_marker_ids: Callable[[int], Sequence[int]],
    loss_start: Sequence[int] | None = None,
) -> tuple[list[int], list[int]]:
    """input_ids and labels of one window; labels are IGNORE_INDEX except on loss tokens.

    ``token_ids_per_turn[i]`` are turn i's ids as rendered (its length must equal the
    manifest's token count). Loss covers every kept token of the window's loss turns from
    ``loss_start[i]`` on (the length of the role header, 0 by default), so the end-of-turn
    token is trained. Markers (``cut_marker_ids(n_cut)``, ``omitted_marker_ids(n_turns)``)
    carry no loss and must not be longer than ``marker_tokens``, or the window could
    outgrow L_max.
    """
    specs = manifest.turns
    if len(token_ids_per_turn) != len(specs):
        raise ValueError(f"{len(token_ids_per_turn)} token lists for {len(specs)} turns")
    for spec, ids in zip(specs, token_ids_per_turn, strict=True):
        if len(ids) != spec.tokens:
            raise ValueError(f"turn {spec.index}: {len(ids)} ids, manifest says {spec.tokens}")
    window = manifest.window(window_number)
    marker_limit = manifest.config.marker_tokens
    loss = set(window.loss_turns)

    def marker(ids: Sequence[int]) -> list[int]:
        if len(ids) > marker_limit:
            raise ValueError(f"marker of {len(ids)} tokens exceeds marker_tokens={marker_limit}")
        return list(ids)

    input_ids: list[int] = []
    labels: list[int] = []

    def add(ids: Sequence[int], trained: bool, skip: int = 0) -> None:
        input_ids.extend(ids)
        if trained:
            skip = min(skip, len(ids))
            labels.extend([IGNORE_INDEX] * skip)
            labels.extend(ids[skip:])
        else:
            labels.extend([IGNORE_INDEX] * len(ids))

    def add_keep(keep: HistoryKeep, trained: bool) -> None:
        ids = token_ids_per_turn[keep.turn]
        skip = loss_start[keep.turn] if loss_start is not None else 0
        if keep.cut == 0:
            add(ids, trained, skip)
            return
        add(ids[: keep.kept_head], trained, skip)
        add(marker(cut_marker_ids(keep.cut)), False)
        tail_from = len(ids) - keep.kept_tail
        add(ids[tail_from:], trained, max(0, skip - tail_from))

    for i in range(manifest.prefix_end + 1):
        add(token_ids_per_turn[i], False)
    if window.omitted_turns:
        add(marker(omitted_marker_ids(window.omitted_turns)), False)
    for keep in window.history:
        add_keep(keep, False)
    for i in window.target_turns:
        if window.target_cut is not None and window.target_cut.turn == i:
            add_keep(window.target_cut, i in loss)
        else:
            skip = loss_start[i] if loss_start is not None else 0
            add(token_ids_per_turn[i], i in loss, skip)
    return input_ids, labels
