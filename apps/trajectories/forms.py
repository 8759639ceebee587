from __future__ import annotations

from django import forms

from apps.papers.models import Paper
from apps.trajectories.models import AnnotationQueue, Trajectory
from apps.trajectories.queries import SORTS


class TrajectoryFilterForm(forms.Form):
    """The list's filters: the list page and the dataset export read the same fields."""

    q = forms.CharField(required=False, label="Search")
    paper = forms.ModelChoiceField(Paper.objects.order_by("slug"), required=False, to_field_name="slug")
    source = forms.ChoiceField(choices=[("", "any"), *Trajectory.Source.choices], required=False)
    model = forms.CharField(required=False)
    end_state = forms.ChoiceField(choices=[("", "any"), *Trajectory.EndState.choices], required=False)
    review = forms.ChoiceField(
        choices=[("", "any"), ("none", "not reviewed"), *Trajectory.Review.choices], required=False
    )
    score_min = forms.FloatField(required=False, label="Score ≥")
    score_max = forms.FloatField(required=False, label="Score ≤")
    turns_min = forms.IntegerField(required=False, min_value=0, label="Turns ≥")
    turns_max = forms.IntegerField(required=False, min_value=0, label="Turns ≤")
    sort = forms.ChoiceField(choices=[(k, k) for k in SORTS], required=False)


class QueueForm(forms.Form):
    """A new annotation queue; the trajectories come from the list's filters (TrajectoryFilterForm)."""

    name = forms.CharField(max_length=200, required=False)
    unit = forms.ChoiceField(choices=AnnotationQueue.Unit.choices, initial=AnnotationQueue.Unit.TURNS)
    contains = forms.CharField(required=False, max_length=200, label="Only turns containing")
    instructions = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
