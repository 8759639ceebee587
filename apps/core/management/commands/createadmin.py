from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from apps.core.roles import ADMIN, ensure_roles


class Command(BaseCommand):
    help = (
        "Create the first admin user (idempotent). Without --password a random one is generated and "
        "kept in DATA_DIR/admin-password.txt (readable by you only)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default="", help="Defaults to $KLONG_ADMIN_PASSWORD, else generated.")

    def handle(self, *args, username: str, email: str, password: str, **options) -> None:

        User = get_user_model()
        ensure_roles()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} already exists.")
            return
        password = password or os.environ.get("KLONG_ADMIN_PASSWORD", "")
        password_file = settings.DATA_DIR / "admin-password.txt"
        if not password:
            password = secrets.token_urlsafe(12)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        elif len(password) < 8:
            raise CommandError("The admin password must have at least 8 characters.")
        user = User.objects.create_superuser(username=username, email=email, password=password)
        user.groups.add(Group.objects.get(name=ADMIN))
        where = f" (saved in {password_file})" if password_file.exists() else ""
        self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r}{where}."))
