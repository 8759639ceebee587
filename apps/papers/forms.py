from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

from django import forms
from django.conf import settings

from apps.judging.fields import EndpointField
from apps.judging.forms import JudgeConfigForm
from apps.papers.candidates import CandidateFilter, normalise_venue
from apps.papers.fields import PaperField
from apps.papers.models import Paper, PaperCandidate
from apps.papers.pdf import PdfError, pdf_to_markdown


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


def _fingerprint(value: Any) -> str:
    # Text as a browser sends it back (CRLF, trailing space) counts as unchanged.
    if isinstance(value, str):
        value = value.replace("\r\n", "\n").strip()
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:16]


class PaperForm(forms.ModelForm):
    """Paper metadata; list fields are edited one entry per line.

    The page carries the revision it was loaded at and a fingerprint of every value it showed:
    a save based on a stale revision is refused, and ``after_conflict`` merges the other edit in.
    """

    blacklist_text = forms.CharField(label="Blacklist", required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                     help_text="URLs the agent must not use, one per line.")
    tags_text = forms.CharField(label="Tags", required=False, help_text="Comma-separated.")
    pdf_upload = forms.FileField(
        label="PDF", required=False,
        help_text="Upload the paper as a PDF: its text becomes the Markdown above (maths kept as written).",
    )
    revision = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    loaded = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Paper
        fields = ("title", "arxiv_id", "venue", "year", "split", "status", "abstract", "markdown", "addendum",
                  "judge_addendum")
        widgets = {name: forms.Textarea(attrs={"rows": rows}) for name, rows in
                   (("abstract", 4), ("markdown", 14), ("addendum", 5), ("judge_addendum", 5))}

    # Model field -> the form field that edits it (the lists are edited as text).
    EDITED: ClassVar[dict[str, str]] = {**{name: name for name in Meta.fields}, "blacklist": "blacklist_text",
                                        "tags": "tags_text"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stale = False  # True on the form after_conflict returns
        self.saved: dict[str, str] = {}  # after a conflict: form field -> the value saved meanwhile
        self.merged: list[str] = []  # after a conflict: labels of fields only the other side changed
        self.pdf_dropped = False  # after a conflict: the PDF's text was kept, the file must be chosen again
        # Taken now: validating a ModelForm writes the input into its instance.
        self.stored = self._fingerprints(self._stored(self.instance))
        if self.instance.pk:
            self.fields["blacklist_text"].initial = "\n".join(self.instance.blacklist)
            self.fields["tags_text"].initial = ", ".join(self.instance.tags)
            self.fields["revision"].initial = self.instance.revision
            self.fields["loaded"].initial = json.dumps(self.stored)

    def clean_pdf_upload(self):


        upload = self.cleaned_data.get("pdf_upload")
        if not upload:
            return None
        if upload.size > settings.KLONG_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The PDF is larger than {settings.KLONG_MAX_UPLOAD_BYTES} bytes.")
        try:
            self.pdf_markdown = pdf_to_markdown(upload, title=self.cleaned_data.get("title", ""))
        except PdfError as exc:
            raise forms.ValidationError(str(exc)) from None
        upload.seek(0)
        return upload

    def submitted(self) -> dict[str, Any]:
        """The model values this (valid) form asks for; a PDF's text replaces the Markdown."""
        data = self.cleaned_data
        values = {name: data[name] for name in self.Meta.fields}
        values["blacklist"] = [u.strip() for u in data["blacklist_text"].splitlines() if u.strip()]
        values["tags"] = [t.strip() for t in data["tags_text"].split(",") if t.strip()]
        if data.get("pdf_upload"):
            values["markdown"] = self.pdf_markdown
        return values

    def changes(self) -> dict[str, Any]:
        """Only the fields whose value differs from the paper as it is stored."""
        return {name: value for name, value in self.submitted().items() if _fingerprint(value) != self.stored[name]}

    def after_conflict(self, current: Paper) -> PaperForm:
        """The form again, on the paper as it is now: the user's own edits kept, the other's merged in.

        A field the user left as loaded takes the current value (listed in ``merged``); one both
        sides changed keeps the user's input, with the saved value in ``saved`` to show beside it.
        """
        try:
            loaded = json.loads(self.cleaned_data.get("loaded") or "{}")
        except ValueError:
            loaded = {}
        mine, theirs = self.submitted(), self._stored(current)
        shown = PaperForm(instance=current)  # the current values as the page shows them
        data = self.data.copy()
        saved: dict[str, str] = {}
        merged: list[str] = []
        for name, form_name in self.EDITED.items():
            base, my_print, their_print = loaded.get(name), _fingerprint(mine[name]), _fingerprint(theirs[name])
            current_text = "" if shown[form_name].value() is None else str(shown[form_name].value())
            if my_print == base and their_print != base:
                data[form_name] = current_text
                merged.append(str(shown[form_name].label))
            elif my_print != base and their_print not in (base, my_print):
                saved[form_name] = current_text
        if self.cleaned_data.get("pdf_upload"):
            data["markdown"] = mine["markdown"]  # the PDF's text; the file itself must be chosen again
        data["revision"] = str(current.revision)
        data["loaded"] = json.dumps(self._fingerprints(theirs))
        form = PaperForm(data, instance=current)
        form.stale, form.saved, form.merged = True, saved, merged
        form.pdf_dropped = bool(self.cleaned_data.get("pdf_upload"))
        return form

    def visible_with_saved(self) -> list[tuple[Any, str | None]]:
        """Each visible field with the value saved meanwhile by someone else (None: no conflict)."""
        return [(field, self.saved.get(field.name)) for field in self.visible_fields()]

    @classmethod
    def _stored(cls, paper: Paper) -> dict[str, Any]:
        return {name: getattr(paper, name) for name in cls.EDITED}

    @staticmethod
    def _fingerprints(values: dict[str, Any]) -> dict[str, str]:
        return {name: _fingerprint(value) for name, value in values.items()}


# --- Research-Factory intake ------------------------------------------------------------------


def _venue_set(raw: str) -> frozenset[str]:
    return frozenset(normalise_venue(v) for v in raw.split(",") if v.strip())


class CandidateRuleFields(forms.Form):
    """The filter on venue, year and citations, shared by the import form and the list page."""

    venues = forms.CharField(required=False, max_length=300, help_text="Comma-separated, e.g. ICML, NeurIPS, ICLR "
                             "(any spelling: 'Neural Information Processing Systems' counts as NeurIPS).")
    year_min = forms.IntegerField(required=False, min_value=1900, max_value=2100, label="From year")
    year_max = forms.IntegerField(required=False, min_value=1900, max_value=2100, label="To year")
    min_citations = forms.IntegerField(required=False, min_value=0, help_text="Candidates without a count are dropped.")

    def clean(self):
        data = super().clean()
        if data.get("year_min") and data.get("year_max") and data["year_min"] > data["year_max"]:
            self.add_error("year_max", "The last year is before the first.")
        return data

    def rule(self):
        data = self.cleaned_data
        return CandidateFilter(_venue_set(data.get("venues") or ""), data.get("year_min"), data.get("year_max"),
                               data.get("min_citations"))


class CandidateImportForm(CandidateRuleFields):
    file = forms.FileField(required=False, help_text="A .txt of arXiv ids (one per line), a .bib or a .csv "
                           "(header: title, arxiv_id, venue, year, citations, url, pdf_url, authors, abstract).")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
                           label="Or paste the list")
    format = forms.ChoiceField(choices=[("", "guess from the file"), ("arxiv", "arXiv ids"), ("bibtex", "BibTeX"),
                                        ("csv", "CSV")], required=False)
    field_order = ("file", "text", "format", "venues", "year_min", "year_max", "min_citations")

    def clean(self):
        data = super().clean()
        if not data.get("file") and not (data.get("text") or "").strip():
            raise forms.ValidationError("Upload a file or paste a list.")
        return data


class CandidateFilterForm(CandidateRuleFields):
    q = forms.CharField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "any")])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "any"), *PaperCandidate.Status.choices]

    def params(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {"q": data.get("q"), "status": data.get("status"), "venue": sorted(_venue_set(data.get("venues") or "")),
                "year_min": data.get("year_min"), "year_max": data.get("year_max"),
                "min_citations": data.get("min_citations")}


class AttachPdfForm(forms.Form):
    pdf = forms.FileField(label="PDF", help_text="The paper's PDF: its text layer becomes the paper's Markdown.")
    split = forms.ChoiceField(choices=Paper.Split.choices, initial=Paper.Split.TRAIN,
                              help_text="For a new paper; an existing one keeps its split.")


class RubricDraftConfigForm(forms.Form):
    """Config of a "rubric_draft" job (launch page and jobs API)."""

    paper = PaperField(store="slug", help_text="The paper to draft a rubric for; it needs its text as Markdown.")
    endpoint = EndpointField()
    code_folder = forms.CharField(
        required=False, max_length=1000,
        help_text="Optional: the official code, a folder under official_code/ in the data folder.",
    )
    target_leaves = forms.IntegerField(min_value=2, max_value=2000, initial=30, help_text="Leaves to ask for.")
    max_attempts = forms.IntegerField(min_value=1, max_value=5, initial=3,
                                      help_text="A refused tree goes back to the model with the problems found.")
    temperature = forms.FloatField(min_value=0, max_value=2, required=False)

    def clean_paper(self) -> str:
        slug = self.cleaned_data["paper"]
        paper = Paper.objects.filter(slug=slug).first()
        if paper is None:
            raise forms.ValidationError(f"No paper with id {slug!r}.")
        if not paper.markdown.strip():
            raise forms.ValidationError(f"Paper {slug!r} has no Markdown text yet: attach its PDF first.")
        return slug

    def clean_endpoint(self) -> str:
        return JudgeConfigForm.clean_endpoint(self)

    def clean_code_folder(self) -> str:


        value = (self.cleaned_data.get("code_folder") or "").strip()
        if not value:
            return ""
        root = (Path(settings.DATA_DIR) / "official_code").resolve()
        folder = (Path(settings.DATA_DIR) / value).resolve()
        if root not in folder.parents or not folder.is_dir():
            raise forms.ValidationError("The code folder must be an existing folder under official_code/ in the "
                                        "data folder.")
        return value
