from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.jobs.forms import model_folder_suggestions
from apps.papers.models import Paper
from apps.trajectories import exports, queues, services, split_service
from apps.trajectories.exports import ExportLimit
from apps.trajectories.forms import QueueForm, TrajectoryFilterForm
from apps.trajectories.models import AnnotationLabel, AnnotationQueue, Trajectory
from apps.trajectories.queries import filter_trajectories, trajectory_rows, turn_index_data
from apps.trajectories.services import TrajectoryImportError
from apps.trajectories.split_service import CONFIG_FIELDS, REASONING_OPTION, ExportError, SplitConfigError
from apps.trajectories.splitting import SplitConfig, SplitError
from apps.trajectories.uploads import (
    UploadTooLarge,
    check_request_size,
    import_upload,
    max_upload_bytes,
)


def trajectory_list(request: HttpRequest) -> HttpResponse:
    filters = TrajectoryFilterForm(request.GET)
    values = filters.cleaned_data if filters.is_valid() else {}
    trajectories = filter_trajectories(trajectory_rows(), values)
    page = Paginator(trajectories, 25).get_page(request.GET.get("page"))
    return render(request, "trajectories/list.html", {
        "page": page, "filters": filters, "sort": values.get("sort") or "newest",
        "sort_columns": [("turns", "Turns"), ("tokens", "Tokens"), ("score", "Score")],
        "can_import": request.user.has_perm(perm("edit_papers")),
        "can_queue": request.user.has_perm(perm("grade")), "queue_form": QueueForm(),
    })


class UploadForm(forms.Form):
    file = forms.FileField()
    paper = forms.ModelChoiceField(Paper.objects.order_by("slug"), required=False, to_field_name="slug")
    skip_bad = forms.BooleanField(required=False, label="Skip bad records (and list them)")


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def trajectory_upload(request: HttpRequest) -> HttpResponse:
    require_perm(request, "edit_papers")
    context: dict[str, Any] = {"max_bytes": max_upload_bytes()}
    if request.method != "POST":
        context["form"] = UploadForm()
        return render(request, "trajectories/upload.html", context)
    try:
        check_request_size(request)
    except UploadTooLarge as exc:
        # Answer before the body is read; the browser's XHR shows this message.
        if _wants_json(request):
            return JsonResponse({"detail": str(exc)}, status=413)
        context.update(form=UploadForm(), error=str(exc))
        return render(request, "trajectories/upload.html", context, status=413)
    form = UploadForm(request.POST, request.FILES)
    status, payload = 400, {"detail": "Choose a file to import."}
    if form.is_valid():
        try:
            outcome = import_upload(
                form.cleaned_data["file"], paper=form.cleaned_data["paper"],
                skip_bad=form.cleaned_data["skip_bad"], user=request.user,
            )
        except UploadTooLarge as exc:
            status, payload = 413, {"detail": str(exc)}
        except TrajectoryImportError as exc:
            status, payload = 400, {**exc.as_dict(), "detail": f"Nothing was imported. {exc}"}
        else:
            if outcome.job is not None:
                url = reverse("jobs:detail", args=[outcome.job.pk])
                status, payload = 202, {"job": outcome.job.pk, "redirect": url}
            else:
                result = outcome.result
                first = result.trajectories[0].id if len(result.trajectories) == 1 else None
                url = reverse("trajectories:detail", args=[first]) if first else reverse("trajectories:list")
                status, payload = 201, {**result.as_dict(), "redirect": url}
    if _wants_json(request):
        return JsonResponse(payload, status=status)
    if status in (201, 202):
        n = len(payload.get("trajectories", []))
        messages.success(request, f"Imported {n} trajectories." if status == 201 else "Import job queued.")
        for skipped in payload.get("skipped", []):
            messages.warning(request, f"Skipped {skipped}")
        if payload.get("clipped_note"):
            messages.warning(request, payload["clipped_note"])
        return redirect(payload["redirect"])
    context.update(form=form, error=payload["detail"])
    return render(request, "trajectories/upload.html", context, status=status)


def trajectory_detail(request: HttpRequest, pk: int) -> HttpResponse:
    trajectory = get_object_or_404(Trajectory.objects.select_related("paper", "reviewed_by"), pk=pk)
    return render(request, "trajectories/detail.html", {
        "trajectory": trajectory,
        "turn_index": turn_index_data(trajectory),
        "labels": list(AnnotationLabel.objects.values("id", "name", "color")),
        "viewer_config": {
            "id": trajectory.pk,
            "turnsUrl": reverse("trajectory-turns", args=[trajectory.pk]),
            "searchUrl": reverse("trajectory-search", args=[trajectory.pk]),
            "annotateUrl": reverse("trajectory-annotations", args=[trajectory.pk]),
            "noLossUrl": reverse("trajectory-no-loss", args=[trajectory.pk]),
            "prefixUrl": reverse("trajectory-prefix", args=[trajectory.pk]),
            "prefixEnd": trajectory.prefix_end,
            "estimated": trajectory.tokenizer == "",
            "canAnnotate": request.user.has_perm(perm("grade")),
        },
        "can_review": request.user.has_perm(perm("grade")),
        "reviews": Trajectory.Review.choices,
    })


def trajectory_review(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "grade")
    trajectory = get_object_or_404(Trajectory, pk=pk)
    if request.method == "POST":
        try:
            services.review_trajectory(
                trajectory, request.POST.get("review", ""), request.POST.get("reason", ""), request.user
            )
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Trajectory {trajectory.get_review_display() or 'review cleared'}.")
    return redirect("trajectories:detail", pk=pk)


def annotations_export(request: HttpRequest) -> HttpResponse:
    """All annotations (optionally of one label or trajectory) as JSON lines, streamed."""
    return exports.annotations_jsonl(exports.annotation_filters(request.GET))


# ------------------------------------------------------------------ split-window view
# The splitter is imported where it is used: it is the heaviest module of the app and only
# these pages need it.


def _split_context(request: HttpRequest, trajectory: Trajectory) -> dict[str, Any]:
    context: dict[str, Any] = {"trajectory": trajectory, "params": request.GET.urlencode()}
    try:
        config = split_service.config_from(request.GET, trajectory)
        manifest, _texts = split_service.plan_for(trajectory, config, split_service.reasoning_choice(request.GET))
    except (split_service.SplitConfigError, SplitError) as exc:
        context["error"] = str(exc)
        return context
    windows = manifest.windows
    context.update(
        manifest=manifest,
        figure=split_service.figure_data(manifest),
        max_tokens=max((w.total_tokens for w in windows), default=0),
        overlong=sum(1 for w in windows if w.overlong),
        trained=sum(1 for s in manifest.turn_stats if s.loss_windows),
        assistant_turns=sum(1 for s in manifest.turns if s.role == "assistant" and s.index > manifest.prefix_end),
    )
    return context


def trajectory_split(request: HttpRequest, pk: int) -> HttpResponse:
    trajectory = get_object_or_404(Trajectory, pk=pk)
    if request.htmx:
        return render(request, "trajectories/_split_plan.html", _split_context(request, trajectory))
    defaults = SplitConfig()
    return render(request, "trajectories/split.html", {
        **_split_context(request, trajectory),
        "defaults": defaults,
        "values": {**{k: getattr(defaults, k) for k in split_service.CONFIG_FIELDS}, "prefix_end": "",
                   **request.GET.dict()},
        "can_pin": request.user.has_perm(perm("grade")),
    })


def trajectory_split_window(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    trajectory = get_object_or_404(Trajectory, pk=pk)
    try:
        config = split_service.config_from(request.GET, trajectory)
        reasoning = split_service.reasoning_choice(request.GET)
        manifest, texts = split_service.plan_for(trajectory, config, reasoning)
        window = split_service.inspect_window(trajectory, manifest, texts, number, reasoning)
    except (split_service.SplitConfigError, SplitError, KeyError) as exc:
        return render(request, "trajectories/_inspector.html", {"error": str(exc)}, status=400)
    return render(request, "trajectories/_inspector.html", {"window": window, "trajectory": trajectory})


def trajectory_pin_prefix(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "grade")
    trajectory = get_object_or_404(Trajectory, pk=pk)
    if request.method == "POST":
        raw = request.POST.get("prefix_end", "").strip()
        try:
            services.set_prefix_end(trajectory, int(raw) if raw else None)
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Prefix pinned up to turn {raw}." if raw else "Prefix back to automatic.")
    return redirect(reverse("trajectories:split", args=[pk]))


# What the export page passes on to its job: the selection and the split options.
EXPORT_PARAMS = ("ids", "base_model", *TrajectoryFilterForm.base_fields, *CONFIG_FIELDS, REASONING_OPTION)


def dataset_export(request: HttpRequest) -> HttpResponse:
    """The export page: what will be exported and how (GET), then a job that renders the zip (POST),
    whose page offers it for download. ?ids=1,2 or the list filters; rejected ones never."""
    params = request.POST if request.method == "POST" else request.GET
    context: dict[str, Any] = {
        "params": [(name, params[name]) for name in EXPORT_PARAMS if params.get(name) not in (None, "")],
        "model_folders": model_folder_suggestions(),
        "tokenizer": params.get("base_model", ""),
    }
    status = 200
    try:
        if request.method == "POST":
            job = exports.launch_dataset_export(params, request.user)
            messages.success(request, f"Dataset export job #{job.pk} queued: the zip appears on this page when it "
                                      "is ready.")
            return redirect("jobs:detail", pk=job.pk)
        config = exports.dataset_export_config(params, request.user)
        context.update(count=len(config["ids"]), tokenizer=config["base_model"],
                       options={k: v for k, v in config.items() if k not in ("ids", "base_model")})
    except ExportLimit as exc:
        context["error"], status = str(exc), 429
    except (ExportError, SplitConfigError) as exc:
        context["error"], status = str(exc), 400
    return render(request, "trajectories/export.html", context, status=status)


# ------------------------------------------------------------------ annotation queues


def queue_list(request: HttpRequest) -> HttpResponse:
    """The queues with their progress (GET); a new queue of the trajectories matching the list's
    filters (POST, from the list page)."""
    context: dict[str, Any] = {"queues": [(q, queues.progress(q)) for q in AnnotationQueue.objects.all()[:50]],
                               "can_create": request.user.has_perm(perm("grade"))}
    if request.method != "POST":
        return render(request, "trajectories/queues.html", context)
    require_perm(request, "grade")
    form, filters = QueueForm(request.POST), TrajectoryFilterForm(request.POST)
    if form.is_valid() and filters.is_valid():
        data = form.cleaned_data
        try:
            queue = queues.create_queue(
                name=data["name"], unit=data["unit"], contains=data["contains"], instructions=data["instructions"],
                trajectories=filter_trajectories(Trajectory.objects.all(), filters.cleaned_data), user=request.user,
            )
        except ValidationError as exc:
            context["error"] = " ".join(exc.messages)
        else:
            messages.success(request, f"Queue {queue.name} created with {queue.items.count():,} items.")
            return redirect("trajectories:queue", pk=queue.pk)
    else:
        context["error"] = " ".join(f"{k}: {' '.join(v)}" for k, v in {**filters.errors, **form.errors}.items())
    return render(request, "trajectories/queues.html", context, status=400)


def queue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    queue = get_object_or_404(AnnotationQueue.objects.select_related("created_by"), pk=pk)
    return render(request, "trajectories/queue.html", {
        "queue": queue, "progress": queues.progress(queue), "recent": queues.recent_items(queue),
        "can_label": request.user.has_perm(perm("grade")),
    })


QUEUE_ACTIONS = ("label", "skip", "undo")


def queue_label(request: HttpRequest, pk: int) -> HttpResponse:
    """Label a queue's items one by one: the next open item with its content (GET); grade, skip
    or undo the last grade (POST), then on to the next."""
    require_perm(request, "grade")
    queue = get_object_or_404(AnnotationQueue, pk=pk)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            item_id = int(request.POST.get("item") or 0)
            if action == "label":
                queues.label_item(queue, item_id, request.user, label=request.POST.get("label", ""),
                                  review=request.POST.get("review", ""), note=request.POST.get("note", ""))
            elif action == "skip":
                queues.skip_item(queue, item_id, request.user)
            elif action == "undo":
                item = queues.undo_last(queue, request.user)
                messages.info(request, f"Undone: item {item.position + 1} is open again.")
            else:
                raise ValidationError(f"action must be one of {', '.join(QUEUE_ACTIONS)}, not {action!r}")
        except ValueError:
            messages.error(request, "item must be a number.")
            status = 400
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            status = 400
        if status == 200:
            return redirect("trajectories:queue-label", pk=queue.pk)
    item = queues.next_item(queue, request.user)
    context: dict[str, Any] = {"queue": queue, "item": item, "progress": queues.progress(queue),
                               "labels": list(AnnotationLabel.objects.all()),
                               "can_undo": queues.has_graded(queue, request.user)}
    if item is not None:
        context.update(queues.item_context(item))
    return render(request, "trajectories/queue_label.html", context, status=status)
