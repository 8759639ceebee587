from __future__ import annotations

from django.urls import path

from apps.trajectories import views

app_name = "trajectories"
urlpatterns = [
    path("", views.trajectory_list, name="list"),
]
