"""Config of the "distill" job, and the dataset form."""

from __future__ import annotations

from django import forms

from apps.datasets.services import DatasetError, check_name
from apps.judging.fields import ENDPOINT_HELP, EndpointField
from apps.judging.models import ModelEndpoint
from apps.papers.fields import PapersField
from apps.papers.models import Paper

DEFAULT_INSTRUCTIONS = (
    "Reproduce the paper's main results. The paper is in /home/paper (read-only). Write your code in "
    "/home/submission, with a reproduce.sh that runs the experiments and writes their outputs; a "
    "grader will judge that folder against a rubric. Do not use the paper's official code or any URL "
    "of its blacklist. Call submit when you are done."
)


class DistillConfigForm(forms.Form):
    """Research-Factory distillation: N teacher runs per train paper, judged, rejection-sampled."""

    papers = PapersField(help_text="Train-split papers with a saved rubric version (the API takes \"a,b\").")
    teacher = EndpointField(help_text="The model endpoint that runs the agent. " + ENDPOINT_HELP)
    judge = EndpointField(help_text="The model endpoint that grades each final submission.")
    runs_per_paper = forms.IntegerField(min_value=1, max_value=64, initial=4, label="Runs per paper (N)")
    concurrency = forms.IntegerField(min_value=1, max_value=1024, required=False, initial=4, label="Runs at once",
                                     help_text="Teacher runs at once, each in its own sandbox (empty: up to 4, "
                                     "within the teacher endpoint's concurrency).")
    threshold = forms.FloatField(min_value=0, max_value=1, required=False, initial=0.5,
                                 help_text="Keep runs whose judged score is at least this.")
    top_k = forms.IntegerField(min_value=1, required=False, label="Top-k per paper",
                               help_text="Keep at most the k best runs of each paper (with the threshold, or alone).")
    dataset = forms.CharField(max_length=200, help_text="Name of the dataset the kept trajectories form.")
    sandbox_backend = forms.ChoiceField(choices=[("auto", "auto (docker if its API answers)"), ("docker", "docker"),
                                                 ("bwrap", "bubblewrap")], initial="auto")
    image = forms.CharField(max_length=300, required=False, help_text="Docker image (the docker backend only).")
    cpus = forms.FloatField(min_value=0.1, max_value=64, initial=2)
    memory_mb = forms.IntegerField(min_value=64, max_value=1_048_576, initial=4096)
    max_steps = forms.IntegerField(min_value=1, max_value=10_000, initial=200)
    time_limit_s = forms.IntegerField(min_value=5, max_value=86_400, initial=3600,
                                      help_text="Wall clock per run; a run past it ends 'timed out' and is judged as is.")
    l_max = forms.IntegerField(min_value=256, initial=32768, label="L_max", help_text="The agent's context budget.")
    tool_timeout_s = forms.IntegerField(min_value=1, max_value=86_400, initial=600)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), initial=DEFAULT_INSTRUCTIONS)
    code_only = forms.BooleanField(required=False, help_text="Judge Code Development leaves only.")
    judge_help_after_s = forms.FloatField(
        min_value=0, max_value=3600, initial=30, label="Run a judge job itself after (s)",
        help_text="A judge job still queued this long (and nothing more urgent queued) is run by this job's own "
        "worker, so a single-worker install cannot deadlock.",
    )

    def clean_papers(self) -> str:
        slugs = [s.strip() for s in self.cleaned_data["papers"].split(",") if s.strip()]
        if not slugs:
            raise forms.ValidationError("Name at least one paper.")
        papers = {p.slug: p for p in Paper.objects.filter(slug__in=slugs)}
        problems = []
        for slug in slugs:
            paper = papers.get(slug)
            if paper is None:
                problems.append(f"no paper {slug!r}")
            elif paper.split != Paper.Split.TRAIN:
                problems.append(f"{slug} is in the {paper.split} split (distil train papers only)")
            elif not paper.rubric_versions.exists():
                problems.append(f"{slug} has no saved rubric version to judge against")
        if problems:
            raise forms.ValidationError("; ".join(problems) + ".")
        return ",".join(dict.fromkeys(slugs))

    def _endpoint(self, name: str) -> str:
        value = self.cleaned_data[name]
        if not ModelEndpoint.objects.filter(name=value).exists():
            raise forms.ValidationError(f"No model endpoint named {value!r}.")
        return value

    def clean_teacher(self) -> str:
        return self._endpoint("teacher")

    def clean_judge(self) -> str:
        return self._endpoint("judge")

    def clean_dataset(self) -> str:
        try:
            return check_name(self.cleaned_data["dataset"])
        except DatasetError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        data = super().clean()
        if data.get("threshold") is None and data.get("top_k") is None:
            raise forms.ValidationError("Give a threshold, a top-k per paper, or both.")
        return data


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=200)
    trajectories = forms.CharField(help_text="Trajectory ids, comma-separated.")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def clean_trajectories(self) -> list[int]:
        raw = self.cleaned_data["trajectories"].replace(" ", "")
        parts = [p for p in raw.split(",") if p]
        if not parts or not all(p.isdigit() for p in parts):
            raise forms.ValidationError("Trajectory ids are numbers separated by commas.")
        return [int(p) for p in parts]
