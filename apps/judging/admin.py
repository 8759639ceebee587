from __future__ import annotations

from django.contrib import admin

from apps.judging.models import JudgeRun


@admin.register(JudgeRun)
class JudgeRunAdmin(admin.ModelAdmin):
    list_display = ("id", "paper", "judge_name", "kind", "score", "created_at")
    list_filter = ("kind", "judge_name")
