from __future__ import annotations

from channels.db import database_sync_to_async

from apps.core.sockets import SessionBoundConsumer, may_watch
from apps.jobs.models import Job
from apps.jobs.progress import JOBS_GROUP, job_group, job_snapshot


class JobConsumer(SessionBoundConsumer):
    """Live events of one job (``/ws/jobs/<id>/``) or of all jobs (``/ws/jobs/``).

    A watcher must be logged in and allowed to see the job; it gets a snapshot from the database
    right after joining, so a late or reconnecting page is never behind. The socket closes when
    the session that opened it ends (``SessionBoundConsumer``).
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        job_id = self.scope["url_route"]["kwargs"].get("job_id")
        snapshot = await self._snapshot_if_allowed(user, job_id)
        if snapshot is None:
            # 4403: the close code browsers see; the handshake is refused before accept.
            await self.close(code=4403)
            return
        self.group = job_group(job_id) if job_id else JOBS_GROUP
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept_for_session()
        if job_id:
            await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await super().disconnect(code)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        # Watching is read-only: actions go through the HTTP API, where CSRF and roles apply. What a
        # client sends is never parsed (malformed or deeply nested JSON would end the socket).
        await self.send_json({"kind": "error", "error": "this socket is read-only"})

    async def job_event(self, message: dict) -> None:
        await self.send_json(message["event"])

    @database_sync_to_async
    def _snapshot_if_allowed(self, user, job_id) -> dict | None:
        if not may_watch(user):
            return None
        if job_id is None:
            return {}
        job = Job.objects.filter(pk=job_id).first()
        return job_snapshot(job) if job else None
