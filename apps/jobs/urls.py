from __future__ import annotations

from django.urls import path

from apps.jobs import checkpoints, views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/", views.job_launch, name="launch"),
    path("pipeline/", views.pipeline_launch, name="launch-pipeline"),
    path("workers/", views.workers, name="workers"),
    path("checkpoints/", checkpoints.checkpoint_list, name="checkpoints"),
    path("checkpoints/<int:pk>/download/", checkpoints.checkpoint_download, name="checkpoint-download"),
    path("checkpoints/<int:pk>/endpoint/", checkpoints.checkpoint_endpoint, name="checkpoint-endpoint"),
    path("selftest/", views.job_launch_selftest, name="launch-selftest"),
    path("<int:pk>/", views.job_detail, name="detail"),
    path("<int:pk>/panel/", views.job_panel, name="panel"),
    path("<int:pk>/cancel/", views.job_cancel, name="cancel"),
    path("<int:pk>/retry/", views.job_retry, name="retry"),
    path("<int:pk>/artifacts/<int:artifact>/download/", views.job_artifact_download, name="artifact-download"),
]
