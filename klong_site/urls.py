from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.core import account
from apps.core import views as core_views
from apps.core.login import RateLimitedLoginView
from apps.ops import views as ops_views
from klong_site.api import router

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("login/", RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", account.api_tokens, name="api-tokens"),
    path("papers/", include("apps.papers.urls")),
    path("rubrics/", include("apps.rubrics.urls")),
    path("trajectories/", include("apps.trajectories.urls")),
    path("judging/", include("apps.judging.urls")),
    path("audit/", include("apps.audit.urls")),
    path("jobs/", include("apps.jobs.urls")),
    path("datasets/", include("apps.datasets.urls")),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file: no inline script for the CSP to allow.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"
