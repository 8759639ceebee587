from __future__ import annotations

from django.urls import path

from apps.papers import views

app_name = "papers"
urlpatterns = [
    path("", views.paper_list, name="list"),
    path("import/", views.paper_import, name="import"),
    path("<slug:slug>/", views.paper_detail, name="detail"),
    path("<slug:slug>/edit/", views.paper_edit, name="edit"),
]
