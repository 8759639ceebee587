"""Form fields that choose papers by what pages show (a select of slugs), for every job form."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.papers.models import Paper


def paper_choices() -> list[tuple[str, str]]:
    papers = Paper.objects.order_by("slug").values_list("slug", "title")
    return [("", "—"), *((slug, f"{slug}: {title}"[:120]) for slug, title in papers)]


def _slug(value: Any) -> str:
    """A paper named by its slug, or by its number (older configs and API clients): its slug."""
    text = str(value).strip()
    if text and not Paper.objects.filter(slug=text).exists() and text.isdigit():
        return Paper.objects.filter(pk=int(text)).values_list("slug", flat=True).first() or text
    return text


class PaperField(forms.ChoiceField):
    """A select of the papers by slug; the API may give a slug or the paper's number. Cleans to what
    the job's config stores: the number (``store="pk"``) or the slug (``store="slug"``)."""

    def __init__(self, *, store: str = "pk", **kwargs: Any) -> None:
        self.store = store
        super().__init__(choices=paper_choices, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return _slug(value) if value not in (None, "") else value  # a stored number shows as its slug

    def to_python(self, value: Any) -> str:
        return _slug(value) if value not in self.empty_values else ""

    def validate(self, value: str) -> None:
        forms.Field.validate(self, value)  # whether it exists is said below, by name

    def clean(self, value: Any) -> int | str | None:
        slug = super().clean(value)
        if not slug:
            return None if self.store == "pk" else ""
        pk = Paper.objects.filter(slug=slug).values_list("pk", flat=True).first()
        if pk is None:
            raise forms.ValidationError(f"No paper {slug!r} (papers are named by their slug, as on the Papers page).")
        return pk if self.store == "pk" else slug


class PapersField(forms.MultipleChoiceField):
    """Several papers by slug (a multiple select; the API may give "a,b"); cleans to "a,b"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=lambda: paper_choices()[1:], **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return [s for s in value.split(",") if s] if isinstance(value, str) else value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, str):
            value = value.split(",")
        return [_slug(v) for v in super().to_python(value) if str(v).strip()]

    def validate(self, value: list[str]) -> None:
        forms.Field.validate(self, value)  # the form says which papers it cannot use, by name

    def clean(self, value: Any) -> str:
        return ",".join(dict.fromkeys(super().clean(value)))
