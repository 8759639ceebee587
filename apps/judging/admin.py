from __future__ import annotations

from django.contrib import admin

from apps.judging.forms import ModelEndpointForm
from apps.judging.models import JudgeRun, ModelEndpoint


@admin.register(JudgeRun)
class JudgeRunAdmin(admin.ModelAdmin):
    list_display = ("id", "paper", "judge_name", "kind", "score", "n_invalid", "cost_usd", "created_at")
    list_filter = ("kind", "judge_name", "split")


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    form = ModelEndpointForm  # the same rules as the page and the API (key variables, URL, params)
    list_display = ("name", "backend", "model", "base_url", "api_key_env", "concurrency", "last_test_ok")
    search_fields = ("name", "model")
