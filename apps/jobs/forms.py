"""Config forms, one per job kind: defaults, help text and validation for the page and the API."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings
from django.forms.fields import InvalidJSONInput
from django.utils.html import format_html, format_html_join

from apps.core.untrusted import JsonTooDeep, loads_json
from apps.datasets.models import Dataset
from apps.jobs.forms_sharding import ShardingOptions, sharding_fields_last
from apps.jobs.models import ModelCheckpoint
from apps.jobs.queues import MAX_GPUS
from apps.papers.fields import PaperField
from apps.trajectories.split_service import SplitConfigError, reasoning_choice

MODEL_FOLDER_HELP = (
    "A model folder on the worker: config.json, the tokenizer files (with a chat template) and the weights. "
    "The checkpoints here are suggested (the demo's tiny model among them: random weights, for trying things). "
    "To bring a real model, download it where there is access, e.g. "
    "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct --local-dir /models/qwen2.5-0.5b-instruct, "
    "copy the folder to every worker, and give its path here (docs/models.md)."
)


def model_folder_suggestions() -> list[tuple[str, str]]:
    """The folders of the checkpoints on this install, newest first, as (path, name)."""
    rows = ModelCheckpoint.objects.order_by("-created_at").values_list("path", "name")[:100]
    return [(str(settings.DATA_DIR / path), name) for path, name in rows]


class ModelFolderInput(forms.TextInput):
    """A folder path, with the known model folders offered as suggestions (a datalist)."""

    def render(self, name, value, attrs=None, renderer=None):
        attrs = {**(attrs or {})}
        listing = f"{attrs.get('id') or name}-suggestions"
        attrs["list"] = listing
        options = format_html_join("", '<option value="{}">{}</option>', model_folder_suggestions())
        return format_html('{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer),
                           listing, options)


class SelftestForm(forms.Form):
    steps = forms.IntegerField(min_value=1, max_value=1000, initial=20, help_text="Steps to run (1-1000).")
    delay_s = forms.FloatField(
        min_value=0, max_value=5, initial=0.1, label="Delay per step (s)", help_text="Seconds each step sleeps."
    )
    echo = forms.CharField(max_length=200, initial="pong", help_text="Returned in the result.")
    fail_at_step = forms.IntegerField(
        min_value=1, required=False, help_text="Raise an error at this step (to see a failure end to end)."
    )


class LaunchForm(forms.Form):
    """The parts of a launch every kind shares."""

    title = forms.CharField(max_length=300, required=False, help_text="Defaults to the kind's name.")
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="0 runs first, 9 last.")
    time_limit_s = forms.IntegerField(
        min_value=1, required=False, label="Time limit (s)", help_text="Stop and fail the job after this long."
    )


class BoundedJSONField(forms.JSONField):
    """A JSON form field whose nesting is limited (KLONG_MAX_JSON_DEPTH): an error, not a 500."""

    def to_python(self, value):
        if isinstance(value, str) and (error := _depth_error(value)):
            raise forms.ValidationError(str(error), code="too_deep")
        return super().to_python(value)

    def bound_data(self, data, initial):
        # The form comes back with the text as typed, not parsed again.
        if isinstance(data, str) and _depth_error(data):
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)


def _depth_error(text: str) -> JsonTooDeep | None:
    try:
        loads_json(text)
    except JsonTooDeep as exc:
        return exc
    except ValueError:
        pass  # not JSON at all: the field says so itself
    return None


PIPELINE_EXAMPLE = """[
  {"kind": "selftest", "config": {"steps": 5}},
  {"kind": "selftest", "config": {"steps": 10, "echo": "second stage"}}
]"""


class PipelineForm(forms.Form):
    title = forms.CharField(max_length=300, required=False)
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="0 runs first, 9 last.")
    stages = BoundedJSONField(
        initial=PIPELINE_EXAMPLE,
        help_text='A list of stages, run in order: [{"kind": ..., "config": {...}}, ...]. Every config is '
        "checked before anything is queued.",
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "spellcheck": "false"}),
    )


def _dataset_choices() -> list[tuple[str, str]]:
    return [("", "none (use the ids or filters)"), *((d.name, d.name) for d in Dataset.objects.order_by("name"))]


@sharding_fields_last
class SFTForm(ShardingOptions):
    """Trajectory-splitting SFT: which trajectories, how to split them, what to train (and on how many ranks)."""

    ids = forms.CharField(
        required=False, label="Trajectory ids", help_text="Comma-separated; empty: the accepted trajectories "
        "matching the filters below."
    )
    dataset = forms.ChoiceField(
        required=False, choices=_dataset_choices,
        help_text="Or a named dataset (e.g. what a distillation kept): its trajectories, rejected ones still skipped.",
    )
    paper = PaperField(store="slug", required=False, help_text="Only this paper's trajectories.")
    source = forms.ChoiceField(
        required=False, choices=[("", "any"), ("imported", "Imported"), ("distilled", "Distilled"), ("rollout", "RL rollout")]
    )
    min_score = forms.FloatField(required=False, min_value=0, max_value=1, help_text="Judged score at least this.")
    base_model = forms.CharField(max_length=500, widget=ModelFolderInput, help_text=MODEL_FOLDER_HELP)
    l_max = forms.IntegerField(
        min_value=64, initial=4096, label="L_max",
        help_text="Context limit of a window. Preview the split of any trajectory on its Split page first.",
    )
    overlap_turns = forms.IntegerField(min_value=0, initial=2, help_text="Turns shared by adjacent windows.")
    train_overlap_once = forms.BooleanField(required=False, help_text="Train each assistant turn in one window only.")
    train_on_reasoning = forms.NullBooleanField(
        required=False, label="Train on reasoning",
        widget=forms.Select(choices=[("", "Default: yes if the chat template shows it"), ("true", "Yes"),
                                     ("false", "No")]),
        help_text="Yes: each assistant turn's reasoning (a thinking teacher's) is in the windows and trained on, "
        "in the base model's own reasoning format (Qwen3's <think> block, gpt-oss's analysis channel; a "
        "template without one gets it as text before the answer). No: it is left out, and the model learns the "
        "answers and tool calls alone. Default: yes when the base model's chat template shows reasoning on the "
        "turns it trains.",
    )
    method = forms.ChoiceField(choices=[("full", "Full fine-tuning"), ("lora", "LoRA (peft)")], initial="full")
    lora_r = forms.IntegerField(min_value=1, max_value=512, initial=16, label="LoRA rank")
    learning_rate = forms.FloatField(min_value=0, max_value=1, initial=1e-5)
    epochs = forms.FloatField(min_value=0.01, max_value=100, initial=1)
    max_steps = forms.IntegerField(min_value=-1, initial=-1, help_text="-1: run the epochs; else stop after this many steps.")
    batch_size = forms.IntegerField(min_value=1, max_value=512, initial=1)
    grad_accum = forms.IntegerField(min_value=1, max_value=1024, initial=8, label="Gradient accumulation")
    precision = forms.ChoiceField(
        choices=[("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")], initial="bf16",
        help_text="The forward pass's precision: bf16 and fp16 by autocast, with fp32 master weights and optimizer "
        "whatever dtype the checkpoint is stored in. bf16 runs on CPUs too; fp16 needs a GPU.",
    )
    save_steps = forms.IntegerField(min_value=1, initial=50, help_text="Checkpoint every this many steps.")
    gpus = forms.IntegerField(
        min_value=0, max_value=MAX_GPUS, initial=1, label="GPUs",
        help_text="GPUs per node. 0: trains on a CPU worker. 1: on a GPU worker, in its own process. More than 1: "
        "one rank per GPU, started with torchrun on a worker that has that many.",
    )
    checkpointing = forms.BooleanField(
        required=False, initial=True, label="Activation checkpointing",
        help_text="Recompute each layer's activations in the backward pass: far less memory, about a third more "
        "compute. On by default (TRL's default).",
    )
    packing = forms.BooleanField(
        required=False, help_text="Pack windows into shared rows (TRL's best-fit packing, padding-free): no "
        "compute on padding.",
    )
    sequence_parallel = forms.IntegerField(
        min_value=1, max_value=64, initial=1, label="Sequence-parallel size",
        help_text="Split each window's tokens over this many GPUs (accelerate's context parallelism, on fsdp): "
        "for windows one GPU cannot hold.",
    )

    def clean(self):
        data = super().clean()
        if data.get("ids") and data.get("dataset"):
            self.add_error("dataset", "Choose trajectory ids or a dataset, not both.")
        if data.get("precision") == "fp16" and data.get("gpus") == 0:
            self.add_error("precision", "fp16 needs a GPU: on a CPU worker choose bf16 or fp32.")
        self.clean_sharding(data, rl=False)
        return data

    def clean_train_on_reasoning(self) -> bool | None:
        # NullBooleanField reads anything it does not know as "default": say so instead
        try:
            return reasoning_choice(self.data)
        except SplitConfigError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_ids(self) -> str:
        raw = self.cleaned_data["ids"].replace(" ", "")
        if raw and not all(part.isdigit() for part in raw.split(",") if part):
            raise forms.ValidationError("Trajectory ids are numbers separated by commas.")
        return raw

    def clean_base_model(self) -> str:

        value = self.cleaned_data["base_model"]
        folder = Path(value)
        if not (folder / "config.json").is_file() or not any(folder.glob("tokenizer*")):
            raise forms.ValidationError(f"{value} is not a model folder (config.json and a tokenizer).")
        return value
