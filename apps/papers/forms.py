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


class PaperForm(forms.ModelForm):
    """Paper metadata; list fields are edited one entry per line."""

    blacklist_text = forms.CharField(label="Blacklist", required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                     help_text="URLs the agent must not use, one per line.")
    tags_text = forms.CharField(label="Tags", required=False, help_text="Comma-separated.")
    pdf_upload = forms.FileField(
        label="PDF", required=False,
        help_text="Upload the paper as a PDF: its text becomes the Markdown above (maths kept as written).",
    )

    class Meta:
        model = Paper
        fields = ("title", "arxiv_id", "venue", "year", "split", "status", "abstract", "markdown", "addendum",
                  "judge_addendum")
        widgets = {name: forms.Textarea(attrs={"rows": rows}) for name, rows in
                   (("abstract", 4), ("markdown", 14), ("addendum", 5), ("judge_addendum", 5))}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["blacklist_text"].initial = "\n".join(self.instance.blacklist)
            self.fields["tags_text"].initial = ", ".join(self.instance.tags)

    def clean_pdf_upload(self):
        from django.conf import settings

        from apps.papers.pdf import PdfError, pdf_to_markdown

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

    def save(self, commit: bool = True) -> Paper:
        paper = super().save(commit=False)
        if self.cleaned_data.get("pdf_upload"):
            paper.pdf = self.cleaned_data["pdf_upload"]
            paper.markdown = self.pdf_markdown
        paper.blacklist = [u.strip() for u in self.cleaned_data["blacklist_text"].splitlines() if u.strip()]
        paper.tags = [t.strip() for t in self.cleaned_data["tags_text"].split(",") if t.strip()]
        if commit:
            paper.save()
        return paper
