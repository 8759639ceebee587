from __future__ import annotations

from django.urls import path

from apps.rubrics import views

app_name = "rubrics"
urlpatterns = [
    path("", views.rubric_list, name="list"),
    path("<slug:slug>/edit/", views.editor, name="editor"),
    path("<slug:slug>/versions/", views.versions, name="versions"),
    path("<slug:slug>/versions/save/", views.save_version, name="save-version"),
    path("<slug:slug>/versions/<int:number>/restore/", views.restore, name="restore"),
]
