"""The one DRF router: every app registers its viewsets here."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from apps.audit.api import AuditQueueViewSet, AuditViewSet
from apps.core.account import ApiTokenViewSet
from apps.datasets.api import DatasetViewSet
from apps.jobs.api import JobViewSet
from apps.jobs.checkpoint_api import CheckpointViewSet
from apps.judging.api import JudgeRunViewSet, ModelEndpointViewSet, RubricCheckViewSet
from apps.ops.api import WorkerViewSet
from apps.papers.api import PaperViewSet
from apps.papers.intake_api import PaperCandidateViewSet
from apps.rubrics.api import RubricNodeViewSet, RubricVersionViewSet
from apps.trajectories.api import AnnotationLabelViewSet, TrajectoryViewSet

router = DefaultRouter()
router.register("papers", PaperViewSet, basename="paper")
router.register("paper-candidates", PaperCandidateViewSet, basename="paper-candidate")
router.register("rubric-versions", RubricVersionViewSet, basename="rubric-version")
router.register("rubric-nodes", RubricNodeViewSet, basename="rubric-node")
router.register("trajectories", TrajectoryViewSet, basename="trajectory")
router.register("annotation-labels", AnnotationLabelViewSet, basename="annotation-label")
router.register("judge-runs", JudgeRunViewSet, basename="judge-run")
router.register("model-endpoints", ModelEndpointViewSet, basename="model-endpoint")
router.register("rubric-checks", RubricCheckViewSet, basename="rubric-check")
router.register("jobs", JobViewSet, basename="job")
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("audit", AuditViewSet, basename="audit")
router.register("audit-queues", AuditQueueViewSet, basename="audit-queue")
router.register("checkpoints", CheckpointViewSet, basename="checkpoint")
router.register("workers", WorkerViewSet, basename="worker")
router.register("tokens", ApiTokenViewSet, basename="api-token")
