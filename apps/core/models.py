from __future__ import annotations

from django.db import models

from apps.core.roles import PERMISSIONS


class Studio(models.Model):
    """No table: the anchor for the studio-wide permissions that roles grant."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = list(PERMISSIONS.items())
