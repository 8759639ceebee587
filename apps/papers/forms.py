from __future__ import annotations

from django import forms

from apps.papers.models import Paper


class PaperImportForm(forms.Form):
    file = forms.FileField(help_text="A zip of one PaperBench paper folder (rubric.json, blacklist.txt, config.yaml, "
                                     "paper.md, addendum.md, judge.addendum.md), or a bare rubric .json.")
    slug = forms.SlugField(required=False, label="Paper id",
                           help_text="Optional; default: the id in config.yaml, else the folder or file name.")


class PaperFilterForm(forms.Form):
    q = forms.CharField(required=False)
    split = forms.ChoiceField(required=False, choices=[("", "any"), *Paper.Split.choices])
    status = forms.ChoiceField(required=False, choices=[("", "any"), *Paper.Status.choices])
    tag = forms.CharField(required=False)
