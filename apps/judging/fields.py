"""A form field that chooses a model endpoint from a select of their names."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.judging.models import ModelEndpoint

ENDPOINT_HELP = ("A model endpoint (Judging > Endpoints): an OpenAI-compatible server (an API, vLLM, SGLang) or a "
                 "local model folder. 'demo-tiny' is the demo's tiny local model: it answers noise, but every job "
                 "runs with it.")


def endpoint_choices() -> list[tuple[str, str]]:
    endpoints = ModelEndpoint.objects.order_by("name").values_list("name", "backend")
    return [("", "—"), *((name, f"{name} ({backend})") for name, backend in endpoints)]


class EndpointField(forms.ChoiceField):
    """A select of the endpoints by name; the form's own ``clean_<field>`` says when a name is unknown."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", ENDPOINT_HELP)
        super().__init__(choices=endpoint_choices, **kwargs)

    def validate(self, value: str) -> None:
        forms.Field.validate(self, value)
