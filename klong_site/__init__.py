# Load the Celery app with Django, so tasks sent by name (apps/jobs/services/dispatch.py) use it.
from klong_site.celery_app import app as celery_app

__all__ = ["celery_app"]
