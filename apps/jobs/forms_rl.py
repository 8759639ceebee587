"""The launch form of progressive-RL jobs (kind ``rl``): policy, tasks, stages, update settings.

The page and the API both validate with it (``apps.jobs.services.validate_config``); every
cleaned value is plain JSON, and the stages are kept as their normalised text
("2h:10, 4h:10, 6h:10") so "Launch again with changes" shows them as typed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from apps.jobs.forms import MODEL_FOLDER_HELP, ModelFolderInput
from apps.jobs.forms_sharding import ShardingOptions, sharding_fields_last
from apps.jobs.models import ModelCheckpoint
from apps.jobs.queues import MAX_GPUS
from apps.judging.llm.config import EndpointConfigError, check_base_url
from apps.judging.models import ModelEndpoint
from apps.papers.models import Paper

DEFAULT_STAGES = "2h:10, 4h:10, 6h:10"
_STAGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*:\s*(\d+)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_stages(text: str) -> list[tuple[float, int]]:
    """"2h:10, 4h:10" -> [(7200.0, 10), (14400.0, 10)]; raises ValueError with the reason."""
    stages = []
    for part in [p for p in text.split(",") if p.strip()]:
        match = _STAGE_RE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not TIMEOUT:ITERATIONS (e.g. 2h:10, 90m:5, 600s:3).")
        timeout = float(match.group(1)) * _UNIT_S[match.group(2)]
        iterations = int(match.group(3))
        if timeout <= 0 or iterations < 1:
            raise ValueError(f"{part.strip()!r}: a stage needs a positive timeout and at least one iteration.")
        stages.append((timeout, iterations))
    if not stages:
        raise ValueError("Give at least one stage.")
    for (a, _), (b, _) in zip(stages, stages[1:], strict=False):
        if b <= a:
            raise ValueError("Stage timeouts must grow from one stage to the next (T(1) < T(2) < ...).")
    return stages


def format_stages(stages: list[tuple[float, int]]) -> str:
    def span(seconds: float) -> str:
        for unit, size in (("h", 3600.0), ("m", 60.0)):
            if seconds >= size and seconds % size == 0:
                return f"{seconds / size:g}{unit}"
        return f"{seconds:g}s"

    return ", ".join(f"{span(t)}:{n}" for t, n in stages)


@sharding_fields_last
class RLForm(ShardingOptions):
    """Progressive RL: which policy, which tasks, the stages and the update."""

    policy_checkpoint = forms.ChoiceField(
        required=False, label="Policy checkpoint",
        help_text="A trained checkpoint (Jobs > Checkpoints), e.g. the result of an SFT job; or give a folder below.",
    )
    policy_model = forms.CharField(
        required=False, max_length=500, label="Policy model folder", widget=ModelFolderInput,
        help_text="Instead of a checkpoint. " + MODEL_FOLDER_HELP,
    )
    task_source = forms.ChoiceField(
        choices=[("papers", "Papers (agent in sandboxes, rubric judge)"), ("toy", "Toy task (programmatic rubric)")],
        initial="papers", label="Tasks",
        help_text="The toy task runs the policy on this worker with a simulated clock: a smoke test of the loop.",
    )
    papers = forms.MultipleChoiceField(
        required=False, help_text="Papers with a saved rubric version; each is one task (group) of n rollouts.",
    )
    sandbox_image = forms.CharField(
        required=False, max_length=300, help_text="Docker image the agent runs in (bubblewrap ignores it)."
    )
    sandbox_backend = forms.ChoiceField(
        choices=[("auto", "auto"), ("docker", "Docker API"), ("bwrap", "bubblewrap")], initial="auto"
    )
    judge_endpoint = forms.ChoiceField(required=False, help_text="The model endpoint that grades the rubric leaves.")
    toy_tasks = forms.IntegerField(min_value=1, max_value=16, initial=2, help_text="Toy task: number of tasks.")
    stages = forms.CharField(
        initial=DEFAULT_STAGES, max_length=500,
        help_text="TIMEOUT:ITERATIONS per stage, comma-separated, timeouts growing (units s, m, h).",
    )
    n_rollouts = forms.IntegerField(min_value=1, max_value=256, initial=4, label="Rollouts per task (n)")
    l_max = forms.IntegerField(
        min_value=64, initial=32768, label="L_max",
        help_text="Context limit of a sub-trajectory; with the overlap it decides how many (K) a rollout gives.",
    )
    overlap_turns = forms.IntegerField(min_value=0, initial=2, help_text="Turns shared by adjacent sub-trajectories.")
    clip_eps = forms.FloatField(min_value=0.001, max_value=1.0, initial=0.2, label="Clip epsilon")
    kl_coef = forms.FloatField(min_value=0.0, max_value=10.0, initial=0.0, label="KL coefficient",
                               help_text="0: no reference model; > 0: KL penalty to the starting policy.")
    learning_rate = forms.FloatField(min_value=0.0, max_value=1.0, initial=1e-6)
    ppo_epochs = forms.IntegerField(min_value=1, max_value=16, initial=1, label="Passes per iteration")
    minibatch_size = forms.IntegerField(min_value=1, max_value=1024, initial=8,
                                        help_text="Sub-trajectories per optimiser step.")
    partial_rollouts = forms.BooleanField(
        required=False, initial=True, help_text="Keep every sandbox busy: an iteration trains on the first n finished "
        "rollouts of each task; unfinished ones go on with the new policy (each turn records its policy version)."
    )
    max_staleness = forms.IntegerField(
        min_value=0, max_value=16, initial=1, help_text="At most batch x (1 + this) rollouts run ahead of training."
    )
    rollout_concurrency = forms.IntegerField(
        min_value=1, max_value=100_000, initial=8, label="Rollouts at once",
        help_text="Agent sessions running at once, each in its own sandbox (capped by the sandboxes per host).",
    )
    rollout_processes = forms.IntegerField(
        required=False, min_value=1, max_value=1024, initial=1, label="Rollout driver processes",
        help_text="Python processes the sessions are spread over: one drives a few hundred sandboxes (docs/deploy.md). "
        "Above 1 needs a served policy: paper rollouts, not a LoRA policy generating on the worker.",
    )
    sandbox_hosts = forms.CharField(
        required=False, max_length=2000, label="Docker hosts",
        help_text="Comma-separated DOCKER_HOST URLs the rollouts spread over. Empty: this worker's DOCKER_HOST.",
    )
    tis_cap = forms.FloatField(
        min_value=1.0, max_value=100.0, initial=2.0, label="Importance-weight cap",
        help_text="Truncated importance sampling: each token's weight min(pi_old / pi_sampler, cap).",
    )
    policy_server_url = forms.URLField(
        required=False, label="Inference server", assume_scheme="http", help_text="For large policies: the OpenAI-compatible base URL of "
        "a vLLM or SGLang server (…/v1); the weights are reloaded after every update. Empty: generate on the worker.",
    )
    policy_server_reload = forms.ChoiceField(
        choices=[("sglang", "SGLang update_weights_from_disk"), ("vllm_lora", "vLLM load_lora_adapter"),
                 ("vllm_sleep", "vLLM sleep, wake_up, reload_weights (full weights; dev endpoints)"),
                 ("vllm_nccl", "vLLM NCCL weight transfer (full weights from GPU memory; TRL's client)")],
        initial="sglang", label="Reload call",
    )
    policy_server_model_path = forms.CharField(
        required=False, max_length=1000, label="Served model folder",
        help_text="vLLM sleep/reload only: the folder the server was started with (shared with the worker); "
        "each update is written there and reloaded in place.",
    )
    eval_every = forms.IntegerField(
        min_value=0, max_value=10_000, initial=0, label="Evaluate every k iterations",
        help_text="0: never. Else the eval papers run with the current policy after every k-th update and are "
        "judged at the eval priority (0); their score is plotted next to the training reward.",
    )
    eval_papers = forms.MultipleChoiceField(
        required=False, help_text="Eval-split papers with a saved rubric version, never trained on.",
    )
    eval_rollouts = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Rollouts per eval paper")
    toy_eval_tasks = forms.IntegerField(min_value=1, max_value=16, initial=1,
                                        help_text="Toy task: number of eval tasks (evaluated, never trained on).")
    reproduce = forms.BooleanField(
        required=False, initial=False, label="Reproduce before judging",
        help_text="Papers: each judged submission's reproduce.sh first runs in a fresh sandbox (PaperBench's "
        "reproduction step) and the judge grades the state it leaves. Slow: a run per judged state.",
    )
    reproduce_timeout = forms.IntegerField(min_value=1, max_value=7 * 24 * 3600, initial=3600,
                                           label="Reproduction timeout (s)")
    reproduce_gpus = forms.IntegerField(min_value=0, max_value=MAX_GPUS, initial=0, label="Reproduction GPUs",
                                        help_text="Docker backend only; the judge worker's Docker host must have them.")
    gpus = forms.IntegerField(min_value=0, max_value=MAX_GPUS, initial=0,
                              help_text="GPUs per node. 0: the cpu queue; k: a worker that takes k-GPU jobs (queue gpu, "
                              "gpu-k). More than 1: the update is sharded over the k GPUs (the strategy below).")
    precision = forms.ChoiceField(
        choices=[("bf16", "bf16 (autocast, fp32 master weights)"), ("fp32", "fp32")], initial="bf16",
        help_text="The forward pass's precision. The weights and the optimizer stay fp32 either way, whatever "
        "dtype the checkpoint is stored in; bf16 autocast runs on CPUs too.",
    )
    lora_mode = forms.ChoiceField(
        choices=[("train", "Train the adapter (LoRA stays LoRA)"), ("merge", "Merge into the base, train every weight")],
        initial="train", label="LoRA policy",
        help_text="For a LoRA checkpoint (an SFT job with LoRA): go on training its adapter, saved and served as "
        "an adapter; or merge it into its base model and train all the weights. Ignored for full checkpoints.",
    )
    gradient_checkpointing = forms.BooleanField(
        required=False, initial=True,
        help_text="Recompute each layer's activations in the backward pass instead of keeping them: long "
        "sub-trajectories fit in memory, for about a third more compute.",
    )
    packing = forms.BooleanField(
        required=False, initial=True, label="Padding-free minibatches",
        help_text="Each minibatch's sub-trajectories end to end in one row, each attending to itself only: no "
        "compute on padding, whatever the spread of their lengths. Off: rows padded to the longest.",
    )
    seed = forms.IntegerField(min_value=0, initial=0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        self.fields["policy_checkpoint"].choices = [("", "—")] + [
            (str(c.pk), f"#{c.pk} {c.name} ({c.method}, {c.created_at:%Y-%m-%d})")
            for c in ModelCheckpoint.objects.all()[:200]
        ]
        self.fields["papers"].choices = [
            (str(p.pk), f"{p.slug}: {p.title}"[:120])
            for p in Paper.objects.filter(rubric_versions__isnull=False).distinct().order_by("slug")
        ]
        self.fields["eval_papers"].choices = [
            (str(p.pk), f"{p.slug}: {p.title}"[:120])
            for p in Paper.objects.filter(split=Paper.Split.EVAL, rubric_versions__isnull=False).distinct().order_by("slug")
        ]
        self.fields["judge_endpoint"].choices = [("", "—")] + [
            (e.name, e.name) for e in ModelEndpoint.objects.order_by("name")
        ]

    def clean_stages(self) -> str:
        try:
            return format_stages(parse_stages(self.cleaned_data["stages"]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_policy_server_url(self) -> str:
        value = self.cleaned_data["policy_server_url"]
        if value:
            try:
                check_base_url(value)  # http(s) only, as for every endpoint (URLField also takes ftp)
            except EndpointConfigError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value

    def clean_policy_model(self) -> str:
        value = self.cleaned_data["policy_model"].strip()
        if value:
            folder = Path(value)
            model = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
            if not model or not any(folder.glob("tokenizer*")):
                raise forms.ValidationError(f"{value} is not a model folder (config.json or a LoRA adapter's "
                                            "adapter_config.json, and a tokenizer).")
        return value

    def clean_policy_server_model_path(self) -> str:
        path = self.cleaned_data.get("policy_server_model_path", "").strip()
        if self.data.get("policy_server_reload") == "vllm_sleep" and self.data.get("policy_server_url") and not path:
            raise forms.ValidationError("The vLLM sleep/reload call needs the folder the server loads its weights from.")
        return path

    def _policy_is_adapter(self, data: dict[str, Any]) -> bool:
        if data.get("policy_model"):
            return (Path(data["policy_model"]) / "adapter_config.json").is_file()
        checkpoint = ModelCheckpoint.objects.filter(pk=data.get("policy_checkpoint") or None).first()
        return checkpoint is not None and (Path(settings.DATA_DIR) / checkpoint.path / "adapter_config.json").is_file()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("policy_checkpoint")) == bool(data.get("policy_model")):
            self.add_error("policy_checkpoint", "Choose a checkpoint or give a model folder (one of the two).")
        if data.get("task_source") == "papers":
            if not data.get("papers"):
                self.add_error("papers", "Choose at least one paper with a rubric version.")
            if not data.get("judge_endpoint"):
                self.add_error("judge_endpoint", "Papers are judged by a model endpoint: choose one.")
        elif data.get("policy_server_url"):
            self.add_error("policy_server_url", "The toy task generates on the worker: leave the server empty.")
        if data.get("policy_server_url") and data.get("policy_server_reload") == "vllm_lora" and (
                data.get("lora_mode") == "merge" or not self._policy_is_adapter(data)):
            self.add_error("policy_server_reload", "vLLM's load_lora_adapter takes a LoRA adapter: choose a LoRA "
                           "checkpoint trained as LoRA, or SGLang's reload for full weights.")
        self._clean_eval(data)
        self._clean_drivers(data)
        if data.get("reproduce") and data.get("task_source") == "toy":
            self.add_error("reproduce", "The toy task has no reproduce.sh: reproduction is for papers.")
        if data.get("reproduce") and data.get("reproduce_gpus") and data.get("sandbox_backend") == "bwrap":
            self.add_error("reproduce_gpus", "bubblewrap cannot give a sandbox GPUs: use the docker backend.")
        self.clean_sharding(data, rl=True)
        return data

    def _clean_drivers(self, data: dict[str, Any]) -> None:
        processes = data.get("rollout_processes") or 1
        if processes <= 1:
            return
        if data.get("task_source") == "toy":
            self.add_error("rollout_processes", "The toy task runs in the job's process: driver processes are for "
                           "paper rollouts.")
        elif not data.get("policy_server_url") and self._policy_is_adapter(data):
            self.add_error("rollout_processes", "A LoRA policy without an inference server generates in the job's "
                           "process, which driver processes cannot share: give a server, or use 1.")
        if processes > (data.get("rollout_concurrency") or 1):
            self.add_error("rollout_processes", "More driver processes than rollouts at once: some would have "
                           "nothing to run.")

    def _clean_eval(self, data: dict[str, Any]) -> None:
        every = data.get("eval_every") or 0
        if not every:
            return
        if data.get("stages"):  # already normalised: its total is the run's iterations
            total = sum(n for _, n in parse_stages(data["stages"]))
            if every > total:
                self.add_error("eval_every", f"No evaluation would run: the stages have {total} iterations in all.")
        if data.get("task_source") == "papers":
            chosen = set(data.get("eval_papers") or [])
            if not chosen:
                self.add_error("eval_papers", "Choose at least one eval-split paper to evaluate on (or evaluate every 0).")
            trained = sorted(chosen & set(data.get("papers") or []), key=int)
            if trained:
                slugs = ", ".join(Paper.objects.filter(pk__in=trained).order_by("slug").values_list("slug", flat=True))
                self.add_error("papers", f"{slugs}: an eval paper cannot be trained on as well.")
