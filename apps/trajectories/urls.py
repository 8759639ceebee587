from __future__ import annotations

from django.urls import path

from apps.trajectories import views

app_name = "trajectories"
urlpatterns = [
    path("", views.trajectory_list, name="list"),
    path("import/", views.trajectory_upload, name="upload"),
    path("annotations.jsonl", views.annotations_export, name="annotations-export"),
    path("export/", views.dataset_export, name="dataset-export"),
    path("<int:pk>/", views.trajectory_detail, name="detail"),
    path("<int:pk>/review/", views.trajectory_review, name="review"),
    path("<int:pk>/split/", views.trajectory_split, name="split"),
    path("<int:pk>/split/window/<int:number>/", views.trajectory_split_window, name="split-window"),
    path("<int:pk>/split/prefix/", views.trajectory_pin_prefix, name="pin-prefix"),
    path("queues/", views.queue_list, name="queues"),
    path("queues/<int:pk>/", views.queue_detail, name="queue"),
    path("queues/<int:pk>/label/", views.queue_label, name="queue-label"),
]
