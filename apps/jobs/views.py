from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core.pages import require_perm
from apps.jobs.downloads import artifact_download
from apps.jobs.eta import describe
from apps.jobs.forms import LaunchForm, PipelineForm
from apps.jobs.models import Job, JobArtifact
from apps.jobs.registry import KINDS
from apps.jobs.services.control import cancel_job, retry_job
from apps.jobs.services.launching import JobConfigError, launch_job
from apps.jobs.services.orphans import orphaned_because
from apps.jobs.services.pipelines import launch_pipeline
from apps.jobs.workers import queues_with_live_workers, silent_after_s, worker_overview

STATE_FILTERS = [s for s, _ in Job.State.choices]


def job_list(request: HttpRequest) -> HttpResponse:
    jobs = Job.objects.select_related("created_by")
    state = request.GET.get("state", "")
    if state in STATE_FILTERS:
        jobs = jobs.filter(state=state)
    kind = request.GET.get("kind", "")
    if kind:
        jobs = jobs.filter(kind=kind)
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/list.html",
        {"page": page, "state": state, "kind": kind, "states": Job.State.choices, "kinds": KINDS.values()},
    )


# Jobs of the same kind offered for overlaying on a job's charts.
COMPARABLE_JOBS = 50


def _panel_context(job: Job) -> dict:
    """What the kind's partial on the job page needs (its ``partial_context``)."""
    kind = KINDS.get(job.kind)
    return {"job": job, "kind": kind, **(kind.partial_context(job) if kind and kind.partial_context else {})}


def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("created_by", "parent"), pk=pk)
    series: dict[str, dict[str, list]] = {}
    for step, name, value in job.metrics.values_list("step", "name", "value"):
        s = series.setdefault(name, {"x": [], "y": []})
        s["x"].append(step)
        s["y"].append(value)
    return render(
        request,
        "jobs/detail.html",
        {
            **_panel_context(job),
            "metrics": series,
            "comparable": Job.objects.filter(kind=job.kind).exclude(pk=job.pk).only("pk", "title", "kind", "state")
            [:COMPARABLE_JOBS],
            "logs": job.logs.order_by("-id")[:200][::-1],
            "artifacts": job.artifacts.all(),
            "children": job.children.all(),
            "eta": describe(job.eta_s),
            # A queued job nobody will take (e.g. a GPU job on a machine without GPUs) says so.
            "unserved_queue": job.state == Job.State.QUEUED and job.queue not in queues_with_live_workers(),
            # A running job whose worker died can be retried or cancelled at once.
            "orphaned_because": orphaned_because(job),
        },
    )


def job_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The kind's partial alone: the job page fetches it again as the job changes (static/js/job.js)."""
    job = get_object_or_404(Job, pk=pk)
    context = _panel_context(job)
    if not context["kind"] or not context["kind"].partial:
        raise Http404(f"Jobs of kind {job.kind!r} have no panel.")
    return render(request, context["kind"].partial, context)


def job_artifact_download(request: HttpRequest, pk: int, artifact: int) -> HttpResponse:
    """A file the job offers for download (a dataset export's zip), streamed."""
    return artifact_download(get_object_or_404(JobArtifact, job_id=pk, pk=artifact))


def job_launch(request: HttpRequest) -> HttpResponse:
    """A form per kind, with defaults; ``?from=<id>`` pre-fills from an earlier job."""
    require_perm(request, "launch_jobs")
    source = None
    if request.GET.get("from"):
        source = get_object_or_404(Job, pk=request.GET["from"])
    kind_name = request.POST.get("kind") or request.GET.get("kind") or (source.kind if source else "")
    if kind_name not in KINDS:
        return render(request, "jobs/choose_kind.html", {"kinds": KINDS.values(), "pipeline": PipelineForm()})
    kind = KINDS[kind_name]
    form_class = kind.form
    if form_class is None:
        raise Http404(f"Jobs of kind {kind_name!r} are launched from their own page.")
    if request.method == "POST":
        launch = LaunchForm(request.POST)
        config_form = form_class(request.POST, prefix="config")
        if launch.is_valid() and config_form.is_valid():
            config = {k: v for k, v in config_form.cleaned_data.items() if v is not None}
            try:
                job = launch_job(
                    kind_name, config, request.user,
                    title=launch.cleaned_data["title"], priority=launch.cleaned_data["priority"],
                    time_limit_s=launch.cleaned_data["time_limit_s"],
                )
            except JobConfigError as exc:
                for field, errors in exc.errors.items():
                    config_form.add_error(field if field in config_form.fields else None, errors)
            else:
                messages.success(request, f"Job #{job.pk} queued.")
                return redirect("jobs:detail", pk=job.pk)
    else:
        initial = {**kind.initial(), **(source.config if source else {})}
        # Links from other pages pre-fill options: /jobs/new/?kind=rubric_draft&paper=bam
        initial.update({k: v for k, v in request.GET.items() if k in form_class.base_fields})
        config_form = form_class(initial=initial, prefix="config")
        launch = LaunchForm(initial={"priority": source.priority if source else 5,
                                     "title": source.title if source else ""})
    return render(
        request, "jobs/launch.html", {"kind": kind, "launch": launch, "config_form": config_form, "source": source}
    )


@require_POST
def pipeline_launch(request: HttpRequest) -> HttpResponse:
    require_perm(request, "launch_jobs")
    form = PipelineForm(request.POST)
    if form.is_valid():
        try:
            job = launch_pipeline(
                form.cleaned_data["stages"], request.user,
                title=form.cleaned_data["title"], priority=form.cleaned_data["priority"],
            )
        except JobConfigError as exc:
            form.add_error("stages", [f"{field}: {' '.join(errors)}" for field, errors in exc.errors.items()])
        except ValidationError as exc:
            form.add_error("stages", exc.messages)
        else:
            messages.success(request, f"Pipeline #{job.pk} queued.")
            return redirect("jobs:detail", pk=job.pk)
    return render(request, "jobs/choose_kind.html", {"kinds": KINDS.values(), "pipeline": form}, status=400)


@require_POST
def job_launch_selftest(request: HttpRequest) -> HttpResponse:
    require_perm(request, "launch_jobs")
    job = launch_job("selftest", {"steps": 20, "delay_s": 0.1}, request.user)
    messages.success(request, f"Self-test job #{job.pk} queued.")
    return redirect("jobs:detail", pk=job.pk)


@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "cancel_jobs")
    job = get_object_or_404(Job, pk=pk)
    try:
        cancel_job(job)
        messages.info(request, f"Cancellation of job #{job.pk} requested.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("jobs:detail", pk=job.pk)


@require_POST
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "launch_jobs")
    job = get_object_or_404(Job, pk=pk)
    try:
        retry_job(job, request.user)
        messages.success(request, f"Job #{job.pk} queued again; it resumes from its last checkpoint.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("jobs:detail", pk=job.pk)


def workers(request: HttpRequest) -> HttpResponse:
    rows = worker_overview()
    return render(request, "jobs/workers.html", {
        "workers": [row for row in rows if not row.silent], "silent": [row for row in rows if row.silent],
        "heartbeat_s": settings.KLONG_WORKER_HEARTBEAT_S,
        "silent_after_s": silent_after_s(),
    })
