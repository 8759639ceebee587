from __future__ import annotations

from django.urls import path

from apps.judging import views

app_name = "judging"
urlpatterns = [
    path("", views.judge_run_list, name="list"),
]
