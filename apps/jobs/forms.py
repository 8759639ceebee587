"""Config forms, one per job kind: defaults, help text and validation for the page and the API."""

from __future__ import annotations

from django import forms


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


PIPELINE_EXAMPLE = """[
  {"kind": "selftest", "config": {"steps": 5}},
  {"kind": "selftest", "config": {"steps": 10, "echo": "second stage"}}
]"""


class PipelineForm(forms.Form):
    title = forms.CharField(max_length=300, required=False)
    priority = forms.IntegerField(min_value=0, max_value=9, initial=5, help_text="0 runs first, 9 last.")
    stages = forms.JSONField(
        initial=PIPELINE_EXAMPLE,
        help_text='A list of stages, run in order: [{"kind": ..., "config": {...}}, ...]. Every config is '
        "checked before anything is queued.",
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "spellcheck": "false"}),
    )
