"""Forms of the audit pages (the API validates the same inputs with serializers)."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Q

from apps.audit.agreement import VERDICT_METRICS
from apps.core.roles import perm
from apps.papers.models import Paper


def graders():
    """Users whose role lets them grade (through a group, directly, or as superusers)."""
    app_label, codename = perm("grade").split(".")
    granted = Q(groups__permissions__codename=codename, groups__permissions__content_type__app_label=app_label)
    direct = Q(user_permissions__codename=codename, user_permissions__content_type__app_label=app_label)
    return get_user_model().objects.filter(granted | direct | Q(is_superuser=True), is_active=True).distinct()


class ImportJudgeEvalForm(forms.Form):
    paper = forms.ModelChoiceField(queryset=Paper.objects.all(), to_field_name="slug")
    file = forms.FileField(help_text="A PaperBench judge_eval JSON file: human grades on every leaf.")


class QueueForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    assignees = forms.ModelMultipleChoiceField(queryset=graders(), to_field_name="username",
                                               widget=forms.SelectMultiple(attrs={"size": 4}))
    category = forms.CharField(max_length=40, required=False, help_text="Only leaves of this category (optional).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Evaluated per request: graders change when roles do.
        self.fields["assignees"].queryset = graders()


class ReassignForm(forms.Form):
    """Hand one grader's open leaves of a queue to others (the service checks who may)."""

    from_user = forms.ModelChoiceField(queryset=get_user_model().objects.none(), to_field_name="username",
                                       label="Open leaves of")
    to_users = forms.ModelMultipleChoiceField(queryset=get_user_model().objects.none(), to_field_name="username",
                                              label="Hand them to", widget=forms.SelectMultiple(attrs={"size": 4}),
                                              help_text="Shared round-robin when you pick several.")

    def __init__(self, *args, queue=None, **kwargs):
        super().__init__(*args, **kwargs)
        users = get_user_model().objects
        self.fields["from_user"].queryset = (users.filter(audit_items__queue=queue, audit_items__done_at__isnull=True)
                                             .distinct().order_by("username") if queue else users.none())
        self.fields["to_users"].queryset = graders().order_by("username")


class ReportForm(forms.Form):
    reference = forms.ChoiceField(help_text="The judge you trust (e.g. the expensive one, or humans).")
    candidate = forms.ChoiceField(help_text="The judge that would replace it.")
    papers = forms.ModelMultipleChoiceField(queryset=Paper.objects.all(), to_field_name="slug", required=False,
                                            help_text="Default: every paper graded by both.",
                                            widget=forms.SelectMultiple(attrs={"size": 4}))
    metric = forms.ChoiceField(choices=[(m, m) for m in VERDICT_METRICS], initial="kendall", required=False)
    threshold = forms.FloatField(initial=0.8, min_value=-1.0, max_value=1.0, required=False)
    confidence = forms.FloatField(initial=0.95, min_value=0.5, max_value=0.999, required=False)
    n_resamples = forms.IntegerField(initial=1000, min_value=0, max_value=10_000, label="Bootstrap resamples",
                                     required=False)
    seed = forms.IntegerField(initial=0, required=False)

    def __init__(self, *args, judges: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(j, j) for j in judges]
        self.fields["reference"].choices = choices
        self.fields["candidate"].choices = choices

    def clean(self):
        data = super().clean()
        # A bare link (?reference=..&candidate=..) gets the defaults shown on the form.
        for name in ("metric", "threshold", "confidence", "n_resamples", "seed"):
            if data.get(name) in (None, ""):
                data[name] = self.fields[name].initial
        return data
