"""The KLong Studio API client: ``klong_client.py`` (one file, imports only requests) and its
command line, ``python -m apps.client`` (or ``python klong_client.py`` where the file is copied)."""
