# Load the Celery app with Django, so shared tasks bind to it (and get delay_on_commit).
from worker.celery import app as celery_app

__all__ = ["celery_app"]
