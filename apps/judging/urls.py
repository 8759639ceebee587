from __future__ import annotations

from django.urls import path

from apps.judging import views

app_name = "judging"
urlpatterns = [
    path("", views.judge_run_list, name="list"),
    path("runs/<int:pk>/", views.judge_run_detail, name="detail"),
    path("runs/<int:pk>/leaves/<int:node_index>/", views.leaf_grade_detail, name="leaf"),
    path("endpoints/", views.endpoint_list, name="endpoints"),
    path("endpoints/<slug:name>/test/", views.endpoint_test, name="endpoint-test"),
    path("judge-eval/", views.judge_eval, name="judge-eval"),
    path("checks/", views.rubric_checks, name="checks"),
]
