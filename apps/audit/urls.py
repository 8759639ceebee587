from __future__ import annotations

from django.urls import path

from apps.audit import views

app_name = "audit"
urlpatterns = [
    path("", views.home, name="home"),
    path("compare/", views.compare, name="compare"),
    path("compare/metrics/", views.compare_metrics, name="compare-metrics"),
    path("compare/export.<str:fmt>", views.compare_export, name="compare-export"),
    path("import/", views.import_judge_eval, name="import"),
    path("queues/", views.queue_create, name="queue-create"),
    path("queues/<int:pk>/", views.queue_detail, name="queue"),
    path("queues/<int:pk>/reassign/", views.queue_reassign, name="queue-reassign"),
    path("report/", views.report, name="report"),
    path("report/export.<str:fmt>", views.report_export, name="report-export"),
    path("what-if/", views.what_if, name="what-if"),
]
