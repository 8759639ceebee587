"""Config form of the "agent_run" job: one agent, one paper, one model endpoint, one sandbox."""

from __future__ import annotations

from django import forms

from apps.jobs.queues import MAX_GPUS
from apps.judging.fields import EndpointField
from apps.judging.forms import JudgeConfigForm
from apps.papers.fields import PaperField
from apps.papers.models import Paper


class AgentRunForm(forms.Form):
    paper = PaperField(help_text="The paper to reproduce: its Markdown, addendum and blacklist.")
    endpoint = EndpointField()
    source = forms.ChoiceField(
        choices=[("distilled", "Distilled (teacher run)"), ("rollout", "RL rollout (policy run)")],
        initial="distilled", help_text="How the trajectory is labelled.",
    )
    policy_version = forms.CharField(max_length=100, required=False, help_text="Recorded on the trajectory.")
    instructions = forms.CharField(
        required=False, max_length=20_000, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Extra instructions for the agent (mounted read-only with the paper).",
    )
    max_steps = forms.IntegerField(min_value=1, max_value=100_000, initial=100, help_text="Model calls at most.")
    time_limit_s = forms.IntegerField(min_value=5, max_value=7 * 24 * 3600, initial=3600,
                                      label="Time limit (s)", help_text="Wall clock; the run ends timed out.")
    l_max = forms.IntegerField(min_value=256, initial=32768, label="L_max",
                               help_text="Context budget: pinned prefix + truncated history, as in SFT.")
    reserve_tokens = forms.IntegerField(min_value=16, initial=4096, help_text="Tokens of L_max left for each answer.")
    tool_timeout_s = forms.IntegerField(min_value=1, initial=600, label="Tool timeout (s)")
    temperature = forms.FloatField(min_value=0, max_value=2, required=False)
    backend = forms.ChoiceField(choices=[("auto", "auto (docker if it answers)"), ("docker", "docker"),
                                         ("bwrap", "bubblewrap")], initial="auto")
    image = forms.CharField(max_length=300, required=False, help_text="Docker image; default KLONG_SANDBOX_IMAGE.")
    cpus = forms.FloatField(min_value=0.1, max_value=256, initial=2)
    memory_mb = forms.IntegerField(min_value=64, max_value=4_000_000, initial=4096, label="Memory (MB)")
    gpus = forms.IntegerField(min_value=0, max_value=MAX_GPUS, initial=0, label="GPUs", help_text="Docker backend only.")
    network = forms.BooleanField(required=False, help_text="Let the sandbox reach the network (off by default).")

    def clean_paper(self) -> int:
        pk = self.cleaned_data["paper"]
        paper = Paper.objects.filter(pk=pk).only("markdown", "slug").first()
        if paper is None:
            raise forms.ValidationError(f"No paper with id {pk}.")
        if not paper.markdown.strip():
            raise forms.ValidationError(f"Paper {paper.slug} has no Markdown yet: attach its PDF or text first.")
        return pk

    clean_endpoint = JudgeConfigForm.clean_endpoint

    def clean(self):
        data = super().clean()
        if data.get("gpus") and data.get("backend") == "bwrap":
            self.add_error("gpus", "bubblewrap cannot give a sandbox GPUs: use the docker backend.")
        l_max, reserve = data.get("l_max"), data.get("reserve_tokens")
        if l_max and reserve and reserve >= l_max // 2:
            self.add_error("reserve_tokens", "Leave at least half of L_max for the context.")
        return data
