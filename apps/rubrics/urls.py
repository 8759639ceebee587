from __future__ import annotations

from django.urls import path

from apps.rubrics import views

app_name = "rubrics"
urlpatterns = [
    path("", views.rubric_list, name="list"),
]
