"""Forms: the judge job's config (used by the launch page and the jobs API), endpoints, requests."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from apps.jobs.queues import MAX_GPUS
from apps.judging.fields import EndpointField
from apps.judging.llm.config import key_policy
from apps.judging.models import ModelEndpoint, RubricCheck, endpoint_field_errors
from apps.judging.services import judge_eval_tree_path, submission_folder, validate_check_leaf
from apps.papers.fields import PaperField


class JudgeConfigForm(forms.Form):
    """Config of a "judge" job. Ids and names only: the worker reads the rows itself."""

    paper = PaperField(help_text="The paper whose rubric grades the submission.")
    rubric_version = forms.IntegerField(min_value=1, required=False, help_text="Default: the paper's latest version.")
    endpoint = EndpointField()
    submission = forms.CharField(
        max_length=1000, help_text="Submission folder, relative to the data folder (e.g. submissions/<id>)."
    )
    code_only = forms.BooleanField(required=False, initial=False, help_text="Grade Code Development leaves only.")
    trajectory = forms.IntegerField(min_value=1, required=False, help_text="The agent run the submission came from.")
    reproduce_started_at = forms.FloatField(
        required=False, help_text="When reproduce.sh started (epoch seconds): outputs are files written after it."
    )
    parse_retries = forms.IntegerField(min_value=0, max_value=5, initial=2, help_text="Re-asks on an unusable answer.")
    # The reproduction step (worker/sandbox/reproduce.py): as PaperBench, grade the folder as the
    # submission's reproduce.sh leaves it in a fresh sandbox.
    reproduce = forms.BooleanField(
        required=False, initial=False,
        help_text="Run the submission's reproduce.sh in a fresh sandbox first and grade what it leaves.",
    )
    reproduce_timeout = forms.IntegerField(
        min_value=1, max_value=7 * 24 * 3600, initial=3600, label="Reproduction timeout (s)",
        help_text="reproduce.sh is killed after this long; the files are graded as it left them.",
    )
    reproduce_backend = forms.ChoiceField(
        choices=[("auto", "auto"), ("docker", "Docker API"), ("bwrap", "bubblewrap")], initial="auto",
        help_text="Where reproduce.sh runs (auto: the Docker API if it answers, else bubblewrap).",
    )
    reproduce_image = forms.CharField(required=False, max_length=300,
                                      help_text="Docker image (default KLONG_SANDBOX_IMAGE); bubblewrap ignores it.")
    reproduce_gpus = forms.IntegerField(min_value=0, max_value=MAX_GPUS, initial=0, label="Reproduction GPUs",
                                        help_text="Docker backend only: the Docker host must have them.")
    reproduce_memory_mb = forms.IntegerField(min_value=256, max_value=4 * 1024 * 1024, initial=8192)
    reproduce_network = forms.BooleanField(required=False, initial=False,
                                           help_text="Give reproduce.sh the network (off: it runs with none).")

    def clean(self) -> dict:
        data = super().clean()
        if data.get("reproduce"):
            if data.get("reproduce_started_at") is not None:
                self.add_error("reproduce_started_at", "The reproduction step sets it: leave it out with reproduce.")
            if data.get("reproduce_gpus") and data.get("reproduce_backend") == "bwrap":
                self.add_error("reproduce_gpus", "bubblewrap cannot give a sandbox GPUs: use the docker backend.")
        return data

    def clean_endpoint(self) -> str:
        name = self.cleaned_data["endpoint"]
        if not ModelEndpoint.objects.filter(name=name).exists():
            raise forms.ValidationError(f"No model endpoint named {name!r}.")
        return name

    def clean_submission(self) -> str:
        value = self.cleaned_data["submission"]
        submission_folder(value)  # raises ValidationError when outside the submissions folder or missing
        return value


class ModelEndpointForm(forms.ModelForm):
    class Meta:
        model = ModelEndpoint
        fields = [
            "name", "backend", "base_url", "model", "api_key_env", "params", "price_input_per_m",
            "price_output_per_m", "concurrency", "timeout_s", "max_retries", "description",
        ]
        help_texts = {
            "params": 'Default request options as a JSON object, e.g. {"temperature": 0, "max_tokens": 2048}.',
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["api_key_env"].help_text = (
            f"The environment variable holding the key (never the key itself), one of the {key_policy().describe()}."
        )

    def clean(self):
        data = super().clean()
        errors = endpoint_field_errors(
            backend=data.get("backend", ""), base_url=data.get("base_url", ""),
            api_key_env=data.get("api_key_env", ""), params=data.get("params"), max_retries=data.get("max_retries"),
        )
        for name, message in errors.items():
            if name not in self.errors:  # a field that failed its own checks keeps that message
                self.add_error(name, message)
        return data


class JudgeEvalConfigForm(forms.Form):
    """Config of a "judge_eval" job: a stored human-graded tree judged by an endpoint."""

    graded_tree = forms.CharField(max_length=1000, help_text="Stored graded tree, relative to the data folder.")
    endpoint = EndpointField()
    submission = forms.CharField(max_length=1000, required=False, help_text="Submission folder (default: empty).")
    paper = PaperField(required=False, help_text="The paper whose text the prompts quote.")
    code_only = forms.BooleanField(required=False, initial=False)

    clean_endpoint = JudgeConfigForm.clean_endpoint

    def clean_graded_tree(self) -> str:
        value = self.cleaned_data["graded_tree"]
        judge_eval_tree_path(value)
        return value

    def clean_submission(self) -> str:
        value = self.cleaned_data.get("submission") or ""
        if value:
            submission_folder(value)
        return value


class JudgeEvalRequestForm(forms.Form):
    """The JudgeEval page: upload a human-graded tree, pick an endpoint, optionally the submission."""

    graded_tree = forms.FileField(help_text="A PaperBench judge_eval JSON file (human grades on every node).")
    endpoint = forms.ModelChoiceField(queryset=ModelEndpoint.objects.all(), to_field_name="name")
    submission = forms.FileField(required=False, help_text="The graded submission as a tar/zip (optional).")
    code_only = forms.BooleanField(required=False, help_text="Grade Code Development leaves only.")


class RubricCheckForm(forms.ModelForm):
    class Meta:
        model = RubricCheck
        fields = ("paper", "node_id", "command", "timeout_s")
        widgets = {"command": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})}
        help_texts = {"node_id": "The leaf's id (from the rubric editor)."}

    def clean(self):


        cleaned = super().clean()
        if cleaned.get("paper") and cleaned.get("node_id"):
            try:
                validate_check_leaf(cleaned["paper"], cleaned["node_id"])
            except ValidationError as exc:
                self.add_error("node_id", exc.messages)
        return cleaned


class RubricCheckDeleteForm(forms.Form):
    """The Delete button of a check: its pk, which may be junk or already gone."""

    delete = forms.ModelChoiceField(queryset=RubricCheck.objects.all(), error_messages={
        "invalid_choice": "No such check: it may have been deleted already."})
