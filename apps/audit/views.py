"""Judge audit pages: pick runs, compare side by side and grade, queues, judge report, what-if."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.audit.forms import ImportJudgeEvalForm, QueueForm, ReassignForm, ReportForm
from apps.audit.grid import grid_rows
from apps.audit.models import AuditQueue
from apps.audit.services import judge_eval_import
from apps.audit.services import what_if as rubric_what_if  # the module: the page below is what_if
from apps.audit.services.comparison import build_comparison, parse_run_ids, source_label
from apps.audit.services.exports import comparison_csv, comparison_json, report_csv
from apps.audit.services.queues import create_queue, queue_items, queue_progress, reassign_items
from apps.audit.services.report import ReportRequest, judge_names, judge_report
from apps.audit.services.submissions import submission_key, submission_label
from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.judging.models import JudgeRun
from apps.papers.models import Paper
from apps.rubrics.services.store import has_draft


def _bad_request(request: HttpRequest, message: str | list[str], title: str = "Cannot do that") -> HttpResponse:
    errors = [message] if isinstance(message, str) else message
    return render(request, "audit/error.html", {"errors": errors, "title": title}, status=400)


def _run_ids_param(request: HttpRequest) -> str:
    # Both ?runs=1,2 and the picker's repeated ?runs=1&runs=2.
    return ",".join(v for v in request.GET.getlist("runs") if v)


def home(request: HttpRequest) -> HttpResponse:
    papers = Paper.objects.filter(judge_runs__isnull=False).distinct().order_by("slug")
    paper = None
    submissions: list[dict[str, Any]] = []
    slug = request.GET.get("paper")
    if slug:
        paper = get_object_or_404(Paper, slug=slug)
        groups: dict[str, dict[str, Any]] = {}
        runs = (JudgeRun.objects.filter(paper=paper).select_related("paper", "trajectory", "graded_by", "rubric_version")
                .order_by("-created_at"))
        for run in runs:
            group = groups.setdefault(submission_key(run), {"label": submission_label(run), "runs": []})
            group["runs"].append({"run": run, "label": source_label(run)})
        submissions = list(groups.values())
    queues = AuditQueue.objects.select_related("paper", "created_by")[:30]
    return render(request, "audit/home.html", {
        "papers": papers, "paper": paper, "submissions": submissions, "queues": queues,
        "progress": queue_progress(), "import_form": ImportJudgeEvalForm(),
        "can_grade": request.user.has_perm(perm("grade")),
    })


def _comparison(request: HttpRequest, can_grade: bool) -> Any:
    """The comparison of the runs the request names, or the 400 page saying why there is none."""
    try:
        return build_comparison(parse_run_ids(_run_ids_param(request)), request.user, with_own=can_grade)
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot compare these runs")


def compare(request: HttpRequest) -> HttpResponse:
    can_grade = request.user.has_perm(perm("grade"))
    comparison = _comparison(request, can_grade)
    if isinstance(comparison, HttpResponse):
        return comparison
    queue, assigned = None, set()
    if request.GET.get("queue"):
        queue = AuditQueue.objects.filter(pk=request.GET["queue"] if request.GET["queue"].isdigit() else 0).first()
        if queue is None:
            return _bad_request(request, "No such audit queue.")
        assigned = set(queue.items.filter(assignee=request.user).values_list("node_index", flat=True))
    inner = [r for r in comparison.rows if not r["leaf"]]
    categories = sorted({r["category"] for r in comparison.rows if r["leaf"] and r["category"]})
    mine = next((s for s in comparison.sources if s.mine), None)
    ids = ",".join(map(str, comparison.run_ids))
    leaf = request.GET.get("leaf", "")
    return render(request, "audit/compare.html", {
        "c": comparison, "rows": comparison.rows, "grid_rows": grid_rows(comparison, assigned), "inner": inner, "categories": categories, "can_grade": can_grade,
        "mine": mine, "queue": queue, "ids": ids, "queue_form": QueueForm(initial={"category": ""}),
        "config": {"baseRun": comparison.base.pk, "gradeUrl": reverse("audit-grades"),
                   "undoUrl": reverse("audit-undo-grade"), "canGrade": can_grade,
                   "metricsUrl": f"{reverse('audit:compare-metrics')}?runs={ids}",
                   "mineColumn": comparison.sources.index(mine) if mine else None,
                   "startLeaf": int(leaf) if leaf.isdigit() else None},
    })


def compare_metrics(request: HttpRequest) -> HttpResponse:
    """The compare page's agreement table alone, re-read by the page after each grade."""
    comparison = _comparison(request, request.user.has_perm(perm("grade")))
    if isinstance(comparison, HttpResponse):
        return comparison
    return render(request, "audit/_metrics.html", {"c": comparison})


def compare_export(request: HttpRequest, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "json"):
        return _bad_request(request, "Export as csv or json.")
    try:
        comparison = build_comparison(parse_run_ids(_run_ids_param(request)))
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot export")
    name = f"compare-{'-'.join(map(str, comparison.run_ids))}"
    if fmt == "json":
        response: HttpResponse = JsonResponse(comparison_json(comparison), json_dumps_params={"indent": 1})
    else:
        response = HttpResponse(comparison_csv(comparison), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@require_POST
def import_judge_eval(request: HttpRequest) -> HttpResponse:
    require_perm(request, "grade")
    form = ImportJudgeEvalForm(request.POST, request.FILES)
    if not form.is_valid():
        return _bad_request(request, [f"{k}: {' '.join(v)}" for k, v in form.errors.items()], "Cannot import")
    upload = form.cleaned_data["file"]
    try:
        result = judge_eval_import.import_judge_eval(paper=form.cleaned_data["paper"],
                                                     data=judge_eval_import.read_upload(upload),
                                                     filename=upload.name, user=request.user)
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot import")
    m = result.match
    messages.success(request, f"Imported {m['matched']} human leaf grades ({m['by_id']} by id, {m['by_text']} by "
                              f"requirement text) onto {result.run.paper.slug} v{result.version.number}; "
                              f"{m['unmatched_source']} leaves of the file matched nothing.")
    return redirect(f"{reverse('audit:home')}?paper={result.run.paper.slug}")


@require_POST
def queue_create(request: HttpRequest) -> HttpResponse:
    require_perm(request, "grade")
    form = QueueForm(request.POST)
    if not form.is_valid():
        return _bad_request(request, [f"{k}: {' '.join(v)}" for k, v in form.errors.items()], "Cannot create the queue")
    try:
        queue = create_queue(run_ids=parse_run_ids(request.POST.get("runs", "")),
                             assignees=list(form.cleaned_data["assignees"]), user=request.user,
                             name=form.cleaned_data["name"], category=form.cleaned_data["category"])
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot create the queue")
    messages.success(request, f"Queue {queue.name} created with {queue.items.count()} leaves.")
    return redirect("audit:queue", pk=queue.pk)


def queue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    queue = get_object_or_404(AuditQueue.objects.select_related("paper", "created_by", "base_run__rubric_version"),
                              pk=pk)
    runs = ",".join(map(str, queue.runs))
    compare_url = f"{reverse('audit:compare')}?runs={runs}&queue={queue.pk}"
    may_grade = request.user.has_perm(perm("grade"))
    return render(request, "audit/queue.html", {
        "queue": queue, "items": queue_items(queue), "progress": queue_progress([queue]),
        "compare_url": compare_url,
        "reassign_form": ReassignForm(queue=queue, initial={"from_user": request.user.get_username()})
        if may_grade else None,
    })


@require_POST
def queue_reassign(request: HttpRequest, pk: int) -> HttpResponse:
    require_perm(request, "grade")
    queue = get_object_or_404(AuditQueue.objects.select_related("base_run"), pk=pk)
    form = ReassignForm(request.POST, queue=queue)
    if not form.is_valid():
        return _bad_request(request, [f"{k}: {' '.join(v)}" for k, v in form.errors.items()], "Cannot hand the leaves on")
    data = form.cleaned_data
    try:
        moved = reassign_items(queue, from_user=data["from_user"], to_users=list(data["to_users"]),
                               user=request.user)
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot hand the leaves on")
    names = ", ".join(u.get_username() for u in data["to_users"])
    leaves = "leaf" if moved == 1 else "leaves"
    messages.success(request, f"{moved} open {leaves} of {data['from_user'].get_username()} handed to {names}.")
    return redirect("audit:queue", pk=queue.pk)


def _report_form(request: HttpRequest) -> ReportForm:
    judges = [j["judge_name"] for j in judge_names()]
    if "reference" not in request.GET:
        return ReportForm(None, judges=judges)
    # A bare link (?reference=..&candidate=..) shows and uses the form's defaults for the rest.
    data = request.GET.copy()
    for name, field in ReportForm.base_fields.items():
        if field.initial is not None and not data.get(name):
            data[name] = field.initial
    return ReportForm(data, judges=judges)


def _report_from(form: ReportForm) -> dict[str, Any]:
    data = form.cleaned_data
    return judge_report(ReportRequest(
        reference=data["reference"], candidate=data["candidate"], papers=list(data["papers"]), metric=data["metric"],
        threshold=data["threshold"], n_resamples=data["n_resamples"], confidence=data["confidence"], seed=data["seed"],
    ))


def report(request: HttpRequest) -> HttpResponse:
    form = _report_form(request)
    result = None
    if form.is_bound and form.is_valid():
        try:
            result = _report_from(form)
        except ValidationError as exc:
            form.add_error(None, exc)
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "audit/report.html", {
        "form": form, "report": result, "query": request.GET.urlencode(),
        "plots": _report_plots(result) if result else None,
    }, status=status)


def _report_plots(report: dict[str, Any]) -> dict[str, Any]:
    """Only what the plots need, handed to the page's JS through json_script."""
    per_category = report["leaves"]["per_category"]
    return {
        "reference": report["reference"], "candidate": report["candidate"],
        "scatter": [{"label": s["label"], "x": s["reference"], "y": s["candidate"]} for s in report["submissions"]],
        "categories": [{"category": k, "f1": v["f1"], "kappa": v["kappa"], "n": v["num_samples"]}
                       for k, v in per_category.items()],
        "heatmap": {"subtrees": [d["subtree"] for d in report["subtree_drivers"]],
                    "submissions": [s["label"] for s in report["submissions"]],
                    "values": [[s["subtrees"].get(d["subtree"]) for s in report["submissions"]]
                               for d in report["subtree_drivers"]]},
        "landscape": report["landscape"],
    }


def report_export(request: HttpRequest, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "json"):
        return _bad_request(request, "Export as csv or json.")
    form = _report_form(request)
    if not form.is_bound or not form.is_valid():
        return _bad_request(request, [f"{k}: {' '.join(v)}" for k, v in form.errors.items()] or
                            ["Pick a reference and a candidate judge."], "Cannot export")
    try:
        result = _report_from(form)
    except ValidationError as exc:
        return _bad_request(request, exc.messages, "Cannot export")
    if fmt == "json":
        response: HttpResponse = HttpResponse(json.dumps(result, indent=1, default=str),
                                              content_type="application/json")
    else:
        response = HttpResponse(report_csv(result), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="judge-report.{fmt}"'
    return response


def what_if(request: HttpRequest) -> HttpResponse:
    papers = Paper.objects.filter(rubric_versions__isnull=False).distinct().order_by("slug")
    paper = None
    result = None
    versions: list[int] = []
    slug = request.GET.get("paper")
    selected = request.GET.get("version") or ""
    if slug:
        paper = get_object_or_404(Paper, slug=slug)
        versions = list(paper.rubric_versions.order_by("-number").values_list("number", flat=True))
        # Default: the editor's draft (the edit not saved yet), else the latest version.
        if not selected:
            selected = "draft" if has_draft(paper) or not versions else str(versions[0])
        try:
            tree, label = rubric_what_if.what_if_tree(paper, selected)
            result = rubric_what_if.what_if(paper, tree, label)
        except ValidationError as exc:
            return render(request, "audit/what_if.html", {"papers": papers, "paper": paper, "versions": versions,
                                                          "errors": exc.messages, "selected": selected}, status=400)
    return render(request, "audit/what_if.html", {
        "papers": papers, "paper": paper, "versions": versions, "result": result, "selected": selected,
    })
