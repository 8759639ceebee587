from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core.pages import require_perm
from apps.core.roles import perm
from apps.jobs.models import Job
from apps.judging.forms import JudgeEvalRequestForm, ModelEndpointForm, RubricCheckDeleteForm, RubricCheckForm
from apps.judging.llm.config import key_policy
from apps.judging.models import JudgeRun, LeafGrade, ModelEndpoint, RubricCheck
from apps.judging.services import (
    check_endpoint_connection,
    request_judge_eval,
    store_judge_eval_tree,
    store_submission_upload,
)
from apps.rubrics.paperbench import flatten, leaf_mask, node_number


def judge_run_list(request: HttpRequest) -> HttpResponse:
    runs = JudgeRun.objects.select_related("paper", "trajectory", "rubric_version", "endpoint")
    page = Paginator(runs, 25).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    # Leaves graded, counted from the grades themselves (runs stored before a counter was kept say 0).
    graded = dict(LeafGrade.objects.filter(run__in=[r.pk for r in page.object_list]).values("run")
                  .annotate(n=Count("id")).values_list("run", "n"))
    for run in page.object_list:
        run.graded_leaves = graded.get(run.pk, 0)
    return render(request, "judging/list.html", {"page": page})


def judge_run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(JudgeRun.objects.select_related("paper", "rubric_version", "endpoint", "job"), pk=pk)
    nodes = flatten(run.rubric_version.tree)
    is_leaf = leaf_mask(nodes)
    # Only the columns the tree needs: prompts and answers load per leaf, on demand.
    grades = {
        g["node_index"]: g
        for g in run.grades.values("node_index", "score", "valid_score", "invalid_reason", "explanation", "calls",
                                   "cost_usd", "latency_s", "prompt_tokens", "completion_tokens")
    }
    scores = run.node_scores.get("scores") or []
    invalid = run.node_scores.get("invalid") or []
    depth = [0] * len(nodes)
    rows = []
    for i, node in enumerate(nodes):
        if node.parent is not None:
            depth[i] = depth[node.parent] + 1
        rows.append({
            "index": i, "number": node_number(nodes, i), "depth": depth[i], "indent": depth[i] * 1.2,
            "requirements": node.requirements, "weight": node.weight, "category": node.task_category or "",
            "leaf": is_leaf[i], "score": scores[i] if i < len(scores) else None,
            "invalid": invalid[i] if i < len(invalid) else 0, "grade": grades.get(i),
        })
    return render(request, "judging/detail.html", {"run": run, "rows": rows, "graded_leaves": len(grades)})


def leaf_grade_detail(request: HttpRequest, pk: int, node_index: int) -> HttpResponse:
    grade = get_object_or_404(LeafGrade, run_id=pk, node_index=node_index)
    return render(request, "judging/_leaf.html", {"grade": grade})


def endpoint_list(request: HttpRequest) -> HttpResponse:
    can_edit = request.user.has_perm(perm("launch_jobs"))
    form = ModelEndpointForm()
    if request.method == "POST":
        require_perm(request, "launch_jobs")
        form = ModelEndpointForm(request.POST)
        if form.is_valid():
            endpoint = form.save()
            messages.success(request, f"Saved endpoint {endpoint.name}.")
            return redirect("judging:endpoints")
    return render(
        request, "judging/endpoints.html",
        {"endpoints": ModelEndpoint.objects.all(), "form": form, "can_edit": can_edit,
         "key_variables": key_policy().describe()},
        status=400 if form.errors else 200,
    )


@require_POST
def endpoint_test(request: HttpRequest, name: str) -> HttpResponse:
    require_perm(request, "launch_jobs")
    endpoint = get_object_or_404(ModelEndpoint, name=name)
    result = check_endpoint_connection(endpoint)
    return render(request, "judging/_test_result.html", {"result": result, "endpoint": endpoint})


def judge_eval(request: HttpRequest) -> HttpResponse:
    """JudgeEval: launch a judge over a human-graded tree; list past evaluations with their metrics."""
    can_launch = request.user.has_perm(perm("launch_jobs"))
    form = JudgeEvalRequestForm()
    if request.method == "POST":
        require_perm(request, "launch_jobs")
        form = JudgeEvalRequestForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                tree = store_judge_eval_tree(data["graded_tree"])
                submission = store_submission_upload(data["submission"]) if data.get("submission") else ""
                job = request_judge_eval(graded_tree=tree, endpoint=data["endpoint"], user=request.user,
                                         submission=submission, code_only=data["code_only"],
                                         title=f"JudgeEval {data['graded_tree'].name} with {data['endpoint'].name}")
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return redirect("jobs:detail", pk=job.pk)
    jobs = Job.objects.filter(kind="judge_eval").order_by("-created_at")[:50]
    return render(request, "judging/judge_eval.html", {"form": form, "jobs": jobs, "can_launch": can_launch},
                  status=400 if form.errors else 200)


def rubric_checks(request: HttpRequest) -> HttpResponse:
    """Programmatic leaves of a paper: list, add (curators) and delete."""

    form = RubricCheckForm()
    status = 200
    if request.method == "POST":
        require_perm(request, "edit_rubrics")
        if "delete" in request.POST:
            deletion = RubricCheckDeleteForm(request.POST)
            if deletion.is_valid():
                deletion.cleaned_data["delete"].delete()
                messages.info(request, "Check deleted.")
                return redirect("judging:checks")
            messages.error(request, " ".join(deletion.errors["delete"]))
        else:
            form = RubricCheckForm(request.POST)
            if form.is_valid():
                check = form.save(commit=False)
                check.created_by = request.user
                check.save()
                messages.success(request, f"Leaf {check.node_id} of {check.paper.slug} is now decided by its check.")
                return redirect("judging:checks")
        status = 400
    return render(
        request, "judging/checks.html",
        {"checks": RubricCheck.objects.select_related("paper"), "form": form,
         "can_edit": request.user.has_perm(perm("edit_rubrics"))},
        status=status,
    )
