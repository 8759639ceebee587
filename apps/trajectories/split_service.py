"""The bridge from stored trajectories to the pure splitter (splitting.py) and the window renderer
(windows.py): turn rows, config from a form or the API, the split view's figure data, the window
inspector and the dataset export.

With a tokenizer configured (KLONG_TOKENIZER_PATH), the figure, the inspector and the export all
plan on the chat format's own per-turn counts (``training_plan``) and render windows with
``windows.render_training_window``: the window the inspector shows is token for token the one the
export writes and an SFT job with that base model trains on. Without one, the figure and the
inspector plan on the stored estimates.

``train_on_reasoning`` (the SFT form, the export, the split page) says whether the windows keep
each turn's reasoning; left out, the chat format decides (``renders_reasoning``).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.cache import cache

from apps.core.domain import Invalid
from apps.jobs.models import ModelCheckpoint
from apps.trajectories.chat_native import renderer_for
from apps.trajectories.forms import TrajectoryFilterForm
from apps.trajectories.models import Trajectory
from apps.trajectories.queries import filter_trajectories
from apps.trajectories.services import configured_tokenizer_path
from apps.trajectories.splitting import (
    IGNORE_INDEX,
    SplitConfig,
    SplitError,
    SplitManifest,
    TurnSpec,
    mentions_paper,
    plan_split,
    render_window,
)
from apps.trajectories.tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD, TokenizerCounter, counter_for, turn_text
from apps.trajectories.windows import (
    ChatRenderer,
    TemplateError,
    TurnRow,
    normalise_tools,
    plan_windows,
    render_training_window,
    without_reasoning,
)

# Form / API fields -> SplitConfig fields, with their types. Everything else keeps its default.
CONFIG_FIELDS: dict[str, type] = {
    "l_max": int,
    "prefix_end": int,
    "overlap_turns": int,
    "history_budget": float,
    "recent_full_turns": int,
    "decay": float,
    "train_overlap_once": bool,
}


class SplitConfigError(Invalid, ValueError):
    """A split option that is not a number, or out of its range."""


REASONING_OPTION = "train_on_reasoning"
_YES, _NO = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def reasoning_choice(params: Mapping[str, Any]) -> bool | None:
    """``train_on_reasoning`` from a query, form or job config: True, False, or None (not given:
    the chat format decides)."""
    raw = params.get(REASONING_OPTION)
    if raw in (None, ""):
        return None
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text not in _YES + _NO:
        raise SplitConfigError(f"{REASONING_OPTION}: {text[:40]!r} is not yes or no")
    return text in _YES


def keeps_reasoning(choice: bool | None, renderer: ChatRenderer) -> bool:
    """Whether windows keep the turns' reasoning: the choice made, else whether the chat format
    shows reasoning on the turns it trains."""
    return renderer.renders_reasoning if choice is None else choice


def config_from(params: Mapping[str, Any], trajectory: Trajectory | None = None) -> SplitConfig:
    """A SplitConfig from query/form/JSON values; an empty prefix_end means the trajectory's
    pinned prefix, else the automatic rule. history_budget <= 1 is a fraction of l_max."""
    values: dict[str, Any] = {}
    for name, kind in CONFIG_FIELDS.items():
        raw = params.get(name)
        if raw in (None, ""):
            continue
        try:
            if kind is bool:
                values[name] = raw is True or str(raw).lower() in ("1", "true", "on", "yes")
            else:
                values[name] = float(raw)
        except (TypeError, ValueError):
            raise SplitConfigError(f"{name}: {raw!r} is not a number") from None
        if kind is int:
            # A number field may send "4e3" or "4000.0": whole numbers, however written.
            if not values[name].is_integer():
                raise SplitConfigError(f"{name}: {raw!r} is not a whole number")
            values[name] = int(values[name])
    if "history_budget" in values and values["history_budget"] > 1:
        values["history_budget"] = int(values["history_budget"])
    if "prefix_end" not in values and trajectory is not None and trajectory.prefix_end is not None:
        values["prefix_end"] = trajectory.prefix_end
    try:
        return SplitConfig(**values)
    except (TypeError, ValueError) as exc:
        raise SplitConfigError(str(exc)) from exc


def _turn_rows(trajectory: Trajectory) -> list[tuple[str, int, bool, str]]:
    rows = trajectory.turns.order_by("index").values_list("role", "token_count", "no_loss", "text", "reasoning",
                                                          "tool_calls")
    return [(role, tokens, no_loss, turn_text(text, reasoning, calls))
            for role, tokens, no_loss, text, reasoning, calls in rows]


def specs_and_texts(trajectory: Trajectory) -> tuple[list[TurnSpec], list[str]]:
    """Turn specs from the stored counts (the view's plan), and the texts they count."""
    rows = _turn_rows(trajectory)
    specs = [TurnSpec(i, role, max(1, tokens), no_loss, mentions_paper(text))
             for i, (role, tokens, no_loss, text) in enumerate(rows)]
    return specs, [text for *_, text in rows]


def plan_for(trajectory: Trajectory, config: SplitConfig,
             reasoning: bool | None = None) -> tuple[SplitManifest, list[str]]:
    """The plan the split view shows: the training plan when a chat format is configured, else
    the plan on the stored (estimated) counts."""
    renderer = configured_renderer()
    specs, texts = specs_and_texts(trajectory)
    if renderer is None:
        return plan_split(specs, config), texts
    return training_plan(trajectory, config, renderer, reasoning=keeps_reasoning(reasoning, renderer)), texts


def configured_renderer() -> ChatRenderer | None:
    """The chat format of the configured tokenizer (KLONG_TOKENIZER_PATH), None without one."""
    path = configured_tokenizer_path()
    if not path:
        return None
    return _renderer(path)


@lru_cache(maxsize=4)
def _renderer(path: str) -> ChatRenderer | None:
    counter = counter_for(path)
    assert isinstance(counter, TokenizerCounter)
    try:
        return renderer_for(counter.tokenizer, path)
    except TemplateError:
        return None  # a tokenizer without a chat template: counts stay estimates, export says why


def declared_tools(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The tools the run declared (trajectory meta, else its system prompt's), as templates take them."""
    raw = trajectory.meta.get("tools") if isinstance(trajectory.meta, dict) else None
    if not raw:
        first = trajectory.turns.filter(role="system").order_by("index").values_list("meta", flat=True).first()
        raw = first.get("tools") if isinstance(first, dict) else None
    return normalise_tools(raw)


def training_plan(trajectory: Trajectory, config: SplitConfig, renderer: ChatRenderer, *,
                  reasoning: bool = True) -> SplitManifest:
    """The split on the chat format's own counts (of the turns with or without their reasoning).
    The counts are cached: the figure is redrawn as the form changes, and counting renders every turn."""
    rows, tools = turn_rows(trajectory, reasoning=reasoning), declared_tools(trajectory)
    content = json.dumps([renderer.name, getattr(renderer, "template", ""), tools,
                          [(r.role, r.text, r.reasoning, r.tool_calls, r.tool_call_id) for r in rows]],
                         sort_keys=True, default=str)
    key = f"klong:turn-counts:{trajectory.pk}:{hashlib.sha256(content.encode()).hexdigest()[:32]}"
    counts = cache.get(key)
    if counts is None or len(counts) != len(rows):
        counts = renderer.turn_counts(rows, tools)
        cache.set(key, counts, timeout=24 * 3600)
    return plan_windows(rows, config, renderer, tools, counts=counts)


# ------------------------------------------------------------------ the split view's figure


def figure_data(manifest: SplitManifest) -> dict[str, Any]:
    """Per window: prefix, kept history (fraction kept per turn), targets, overlap, tokens.

    Compact on purpose: the page's JS builds the plotly shapes, in turn or token coordinates.
    """
    cumulative = []
    total = 0
    for spec in manifest.turns:
        cumulative.append(total)
        total += spec.tokens
    cumulative.append(total)
    windows = []
    for number, w in enumerate(manifest.windows, start=1):
        next_start = manifest.windows[number].target_start if number < len(manifest.windows) else None
        windows.append({
            "n": w.number,
            "targets": [w.target_start, w.target_end],
            "history": [[k.turn, round(k.kept / max(k.original, 1), 3)] for k in w.history],
            "omitted": w.omitted_turns,
            "overlap_prev": w.overlap_turns,
            "overlap_next": (w.target_end - next_start + 1) if next_start is not None else 0,
            "loss": list(w.loss_turns),
            "tokens": {"prefix": w.prefix_tokens, "history": w.history_tokens, "targets": w.target_tokens,
                       "total": w.total_tokens},
            "overlong": w.overlong,
        })
    return {
        "l_max": manifest.config.l_max,
        "prefix_end": manifest.prefix_end,
        "turns": len(manifest.turns),
        "cumulative": cumulative,
        "roles": "".join(s.role[0] for s in manifest.turns),
        "windows": windows,
        "content_hash": manifest.content_hash,
    }


# ------------------------------------------------------------------ the window inspector


def _estimate_cut(text: str, head: int, tail: int) -> tuple[str, str]:
    # Estimated counts: tokens ~ chars / 4, so a cut keeps 4 characters per kept token.
    head_chars, tail_chars = head * CHARS_PER_TOKEN, tail * CHARS_PER_TOKEN
    return text[:head_chars], (text[-tail_chars:] if tail_chars else "")


def _tokenizer_cut(counter: TokenizerCounter):
    def cut(text: str, head: int, tail: int) -> tuple[str, str]:
        # Stored counts include the per-message overhead; the text itself has that many fewer.
        ids = counter.encode(text)
        head_ids = ids[: max(0, head - MESSAGE_OVERHEAD)]
        tail_ids = ids[len(ids) - tail :] if tail else []
        return counter.tokenizer.decode(head_ids), counter.tokenizer.decode(tail_ids)

    return cut


_CUT_RE = re.compile(r"(\[\.\.\. \d+ tokens cut \.\.\.\])")


def segments(content: str) -> list[tuple[str, bool]]:
    """A message's text split into (text, is_marker) runs, so the page can mark the cuts."""
    return [(part, bool(_CUT_RE.fullmatch(part))) for part in _CUT_RE.split(content) if part]


@dataclass(frozen=True)
class InspectedWindow:
    number: int
    total_tokens: int
    l_max: int
    overlong: bool
    messages: list[Any]  # RenderedMessage (estimates) or WindowMessage (the chat format's render)
    estimated: bool
    # The window as trained, when a chat format is configured: its text in runs of (text, loss),
    # decoded from exactly the token ids the export writes; or why it cannot be rendered.
    tokens: list[tuple[str, bool]] = field(default_factory=list)
    template_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "messages"},
                "messages": [asdict(m) for m in self.messages]}

    def rows(self) -> list[tuple[Any, list[tuple[str, bool]]]]:
        return [(m, segments(turn_text(m.content, getattr(m, "reasoning", ""), getattr(m, "tool_calls", ()))))
                for m in self.messages]


def _token_runs(renderer: ChatRenderer, ids: Sequence[int], labels: Sequence[int]) -> list[tuple[str, bool]]:
    """The window's tokens decoded in runs of equal loss flag: what the inspector highlights."""

    runs: list[tuple[str, bool]] = []
    start = 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or (labels[t] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            runs.append((renderer.decode(ids[start:t]), labels[start] != IGNORE_INDEX))
            start = t
    return runs


def inspect_window(trajectory: Trajectory, manifest: SplitManifest, texts: Sequence[str],
                   number: int, reasoning: bool | None = None) -> InspectedWindow:
    """Exactly the messages the model sees in window ``number``, markers included, and with a chat
    format configured the very tokens trained on (the export's ``render_training_window``)."""
    window = manifest.window(number)
    renderer = configured_renderer()
    if renderer is not None:
        messages: list[Any] = []
        try:
            rows = turn_rows(trajectory, reasoning=keeps_reasoning(reasoning, renderer))
            rendered = render_training_window(rows, manifest, number, renderer, declared_tools(trajectory))
        except TemplateError as exc:
            return InspectedWindow(number, window.total_tokens, manifest.config.l_max, window.overlong, messages,
                                   False, template_error=str(exc))
        return InspectedWindow(number, len(rendered.input_ids), manifest.config.l_max, window.overlong,
                               list(rendered.messages), False, _token_runs(renderer, rendered.input_ids,
                                                                           rendered.labels))
    counter = counter_for(configured_tokenizer_path())
    same_tokenizer = isinstance(counter, TokenizerCounter) and counter.name == trajectory.tokenizer
    cut = _tokenizer_cut(counter) if same_tokenizer else _estimate_cut
    messages = render_window(texts, manifest, number, cut)
    return InspectedWindow(number, window.total_tokens, manifest.config.l_max, window.overlong, messages,
                           trajectory.tokenizer == "")


# ------------------------------------------------------------------ dataset export


class ExportError(Invalid, ValueError):
    """An export that cannot be made as asked (no tokenizer, nothing selected, a bad filter)."""


DATASET_FILE = "klong-sft-dataset.zip"
# Fixed member times: the same trajectories and settings give the same bytes, whenever exported.
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def export_tokenizer_path(base_model: str = "") -> str:
    """The folder whose tokenizer an export renders with: the chosen base model's; else
    KLONG_TOKENIZER_PATH; else the newest checkpoint's (on a fresh install, the demo model's)."""
    if base_model.strip():
        return base_model.strip()
    if configured_tokenizer_path():
        return configured_tokenizer_path()
    newest = ModelCheckpoint.objects.order_by("-created_at").values_list("path", flat=True).first()
    return str(Path(settings.DATA_DIR) / newest) if newest else ""


def export_renderer(base_model: str = "") -> tuple[str, ChatRenderer]:
    """The tokenizer folder and chat format an export renders with (``export_tokenizer_path``), or
    why there is none to export with."""
    path = export_tokenizer_path(base_model)
    if not path:
        raise ExportError("Exporting token ids needs the base model's tokenizer: choose a model folder (or "
                          "train a checkpoint first).")
    folder = Path(path)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ExportError(f"{path} is not a model folder with a tokenizer (tokenizer.json or tokenizer_config.json).")
    try:
        renderer = _renderer(path)
    except (OSError, ValueError) as exc:  # files that do not load as a tokenizer
        raise ExportError(f"The tokenizer at {path} cannot be loaded: {exc}") from None
    if renderer is None:
        raise ExportError(f"The tokenizer at {path} has no chat template to render turns with.")
    return path, renderer


def _chosen_ids(raw: Any) -> list[int]:
    items = raw if isinstance(raw, list) else str(raw).replace(" ", "").split(",")
    try:
        return list(dict.fromkeys(int(x) for x in items if x != ""))
    except (TypeError, ValueError):
        raise ExportError("ids must be trajectory ids separated by commas") from None


def export_selection(params: Mapping[str, Any]) -> list[Trajectory]:
    """The trajectories to export, in export order: ``ids`` (comma-separated), else accepted ones
    matching the list's filters (the list page's form reads them). Rejected trajectories are never
    exported. Only what a request needs to check is read: the id and the pinned prefix."""
    queryset = Trajectory.objects.exclude(review=Trajectory.Review.REJECTED).only("pk", "prefix_end")
    if params.get("ids") not in (None, "", []):
        chosen = list(queryset.filter(pk__in=_chosen_ids(params["ids"])).order_by("pk"))
    else:
        filters = TrajectoryFilterForm({name: params[name] for name in TrajectoryFilterForm.base_fields
                                        if params.get(name) not in (None, "")})
        if not filters.is_valid():
            raise ExportError(" ".join(f"{name}: {' '.join(errors)}" for name, errors in filters.errors.items()))
        values = {**filters.cleaned_data, "review": filters.cleaned_data["review"] or Trajectory.Review.ACCEPTED}
        chosen = list(filter_trajectories(queryset, values))
    if not chosen:
        raise ExportError("No trajectories selected (rejected ones are never exported).")
    return chosen


def exported_trajectories(ids: Iterable[int]) -> Iterator[Trajectory]:
    """The chosen trajectories one at a time, in the chosen order, so an export holds one run's turns
    at once; one deleted or rejected since the export was asked for is left out."""
    for pk in ids:
        trajectory = Trajectory.objects.exclude(review=Trajectory.Review.REJECTED).filter(pk=pk).first()
        if trajectory is not None:
            yield trajectory


def turn_rows(trajectory: Trajectory, *, reasoning: bool = True) -> list[TurnRow]:
    """The turns as the model sees them (text, reasoning unless left out, tool calls), with their
    no-loss marks."""
    rows = trajectory.turns.order_by("index").values_list("role", "text", "no_loss", "reasoning", "tool_calls",
                                                          "tool_call_id")
    turns = [TurnRow(role, text, no_loss, thought or "", tuple(c for c in calls or () if isinstance(c, dict)),
                     call_id or "")
             for role, text, no_loss, thought, calls, call_id in rows]
    return turns if reasoning else without_reasoning(turns)


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_MEMBER_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16  # what ZipFile gives a member written by name
    return info


def write_dataset(out: BinaryIO, trajectories: Iterable[Trajectory], config_params: Mapping[str, Any], *,
                  on_trajectory: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the dataset zip to ``out``: dataset.jsonl (one line per window with loss: input_ids,
    labels with -100 = no loss) and manifest.json (the tokenizer, its chat format, and each
    trajectory's split manifest with its content hash). Each window is its messages rendered once in
    the base model's chat format, planned on that format's own counts, so every window fits l_max in
    real tokens; the inspector and the SFT job build windows with the same functions. A trajectory
    the chat format cannot render faithfully, or cannot split, stops the export with the reason.

    Lines go to the zip as they are rendered: memory holds one trajectory, whatever the export's
    size. ``on_trajectory(done, windows)`` is called after each trajectory (the job's progress).
    Returns the ids exported and the number of windows.
    """
    path, renderer = export_renderer(str(config_params.get("base_model") or ""))
    try:
        reasoning = keeps_reasoning(reasoning_choice(config_params), renderer)
    except SplitConfigError as exc:
        raise ExportError(str(exc)) from exc
    manifests = []
    windows = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        # zip64: a large export's dataset.jsonl passes the 2 GiB of a plain zip member.
        with archive.open(_member("dataset.jsonl"), "w", force_zip64=True) as jsonl:
            for done, trajectory in enumerate(trajectories, start=1):
                rows = turn_rows(trajectory, reasoning=reasoning)
                if rows:
                    windows += _write_windows(jsonl, trajectory, rows, config_params, renderer, manifests,
                                              reasoning=reasoning)
                if on_trajectory is not None:
                    on_trajectory(done, windows)
        archive.writestr(_member("manifest.json"), json.dumps({
            "tokenizer": counter_for(path).name, "tokenizer_path": path,
            "chat_format": f"{type(renderer).__name__}: {renderer.name}", REASONING_OPTION: reasoning,
            "windows": windows, "trajectories": manifests,
        }, indent=1))
    if not manifests:
        raise ExportError("No trajectories with turns to export.")
    return {"trajectories": [m["trajectory"] for m in manifests], "windows": windows}


def _write_windows(jsonl: BinaryIO, trajectory: Trajectory, rows: list[TurnRow], config_params: Mapping[str, Any],
                   renderer: ChatRenderer, manifests: list[dict[str, Any]], *, reasoning: bool) -> int:
    """One trajectory's windows with loss as JSON lines; its manifest appended to ``manifests``."""
    written = 0
    try:
        manifest = training_plan(trajectory, config_from(config_params, trajectory), renderer, reasoning=reasoning)
        tools = declared_tools(trajectory)
        for window in manifest.windows:
            if not window.loss_turns:
                continue
            rendered = render_training_window(rows, manifest, window.number, renderer, tools)
            line = {"trajectory": trajectory.pk, "window": window.number,
                    "input_ids": rendered.input_ids, "labels": rendered.labels}
            jsonl.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
            written += 1
    except (TemplateError, SplitError, SplitConfigError) as exc:
        raise ExportError(f"Trajectory {trajectory.pk}: {exc}") from exc
    manifests.append({"trajectory": trajectory.pk, "title": trajectory.title, "manifest": manifest.to_dict()})
    return written
