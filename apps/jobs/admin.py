from __future__ import annotations

from django.contrib import admin

from apps.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "title", "state", "progress", "created_by", "created_at")
    list_filter = ("state", "kind", "queue")
    search_fields = ("title", "message", "error")
    readonly_fields = ("created_at", "started_at", "finished_at")
