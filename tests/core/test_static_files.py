"""Static files go out under content-hashed names, compressed, cached for a year; plotly only where a
figure needs it."""

from __future__ import annotations

import re

import pytest

from tests.trajectories.factories import make_trajectory

pytestmark = pytest.mark.django_db


def _scripts(html: str) -> list[str]:
    return re.findall(r'<script src="([^"]+)"', html)


def test_pages_link_static_files_by_content_hash_served_gzipped_and_cached_for_a_year(client_for):
    trajectory = make_trajectory(5)
    client = client_for("viewer")
    html = client.get(f"/trajectories/{trajectory.pk}/").content.decode()
    (viewer,) = [src for src in _scripts(html) if "/trajectory." in src]
    assert re.fullmatch(r"/static/js/trajectory\.[0-9a-f]{12}\.js", viewer)
    response = client.get(viewer, HTTP_ACCEPT_ENCODING="gzip, br")
    assert response.status_code == 200 and response["Content-Encoding"] == "gzip"
    assert "immutable" in response["Cache-Control"] and "max-age=315360000" in response["Cache-Control"]


def test_plotly_loads_on_the_split_view_only_not_on_the_trajectory_viewer(client_for):
    trajectory = make_trajectory(5)
    client = client_for("viewer")
    viewer = client.get(f"/trajectories/{trajectory.pk}/").content.decode()
    split = client.get(f"/trajectories/{trajectory.pk}/split/").content.decode()
    assert "plotly" not in viewer
    (plotly,) = [src for src in _scripts(split) if "plotly" in src]
    assert re.search(rf'src="{re.escape(plotly)}" defer', split)
    plotly_response = client.get(plotly, HTTP_ACCEPT_ENCODING="gzip")
    assert plotly_response["Content-Encoding"] == "gzip"
    assert int(plotly_response["Content-Length"]) < 2_000_000  # 4.6 MB uncompressed
