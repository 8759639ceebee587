from __future__ import annotations

from django.urls import path

from apps.papers import intake_views, views

app_name = "papers"
urlpatterns = [
    path("", views.paper_list, name="list"),
    path("import/", views.paper_import, name="import"),
    path("candidates/", intake_views.candidate_list, name="candidates"),
    path("candidates/import/", intake_views.candidate_import, name="candidate-import"),
    path("candidates/triage/", intake_views.candidate_triage, name="candidate-triage"),
    path("candidates/<int:pk>/", intake_views.candidate_detail, name="candidate-detail"),
    path("<slug:slug>/", views.paper_detail, name="detail"),
    path("<slug:slug>/edit/", views.paper_edit, name="edit"),
]
