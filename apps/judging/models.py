from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from apps.judging.llm.config import (
    EndpointConfig,
    EndpointConfigError,
    check_base_url,
    check_max_retries,
    check_params,
    key_variable_problem,
)

ENV_NAME = RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*$", "The name of an environment variable, e.g. OPENAI_API_KEY.")


class ModelEndpoint(models.Model):
    """A stored model endpoint: how to reach a model, what it costs, how hard to push it.

    The API key is never stored: only the name of the environment variable the worker reads it
    from, one the admin allowed (KLONG_ENDPOINT_KEY_PREFIX, KLONG_ENDPOINT_KEY_VARS).
    """

    class Backend(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible HTTP (OpenAI, vLLM, SGLang, proxies)"
        TRANSFORMERS = "transformers", "Local transformers model folder"

    name = models.SlugField(max_length=100, unique=True)
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.OPENAI)
    base_url = models.CharField(max_length=500, blank=True, help_text="e.g. https://api.openai.com/v1")
    model = models.CharField(max_length=500, help_text="Model name, or the model folder for a local backend.")
    api_key_env = models.CharField(
        max_length=100, blank=True, validators=[ENV_NAME],
        help_text="Name of the environment variable holding the key (never the key itself).",
    )
    params = models.JSONField(default=dict, blank=True, help_text="Default request parameters, e.g. temperature.")
    price_input_per_m = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    price_output_per_m = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    concurrency = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1)])
    timeout_s = models.FloatField(default=120.0, validators=[MinValueValidator(0.1)])
    max_retries = models.PositiveSmallIntegerField(default=4)
    description = models.CharField(max_length=500, blank=True)
    last_test_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def to_config(self) -> EndpointConfig:
        """The config the clients use; ``EndpointConfigError`` when the row breaks a rule (a row
        saved before the rule existed is refused here, and kept as it is)."""
        params = self.params or {}
        return EndpointConfig(
            name=self.name, backend=self.backend, base_url=self.base_url, model=self.model,
            api_key_env=self.api_key_env, params=dict(params) if isinstance(params, dict) else params,
            price_input_per_m=self.price_input_per_m, price_output_per_m=self.price_output_per_m,
            concurrency=self.concurrency, timeout_s=self.timeout_s, max_retries=self.max_retries,
        )


def endpoint_field_errors(*, backend: str, base_url: str, api_key_env: str, params: Any,
                          max_retries: int | None = None) -> dict[str, str]:
    """What is wrong with an endpoint's fields, field by field: the page's form and the API both ask."""
    errors: dict[str, str] = {}
    if backend == ModelEndpoint.Backend.OPENAI:
        if not base_url:
            errors["base_url"] = "An OpenAI-compatible endpoint needs a base URL."
        else:
            try:
                check_base_url(base_url)
            except EndpointConfigError as exc:
                errors["base_url"] = str(exc)
    if api_key_env and (problem := key_variable_problem(api_key_env)):
        errors["api_key_env"] = problem
    try:
        check_params({} if params is None else params)
    except EndpointConfigError as exc:
        errors["params"] = str(exc)
    if max_retries is not None:
        try:
            check_max_retries(max_retries)
        except EndpointConfigError as exc:
            errors["max_retries"] = str(exc)
    return errors


class JudgeRun(models.Model):
    """One grading of one submission against one rubric version, by a model or a human."""

    class Kind(models.TextChoices):
        MODEL = "model", "Model judge"
        HUMAN = "human", "Human"

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="judge_runs")
    trajectory = models.ForeignKey(
        "trajectories.Trajectory", null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_runs"
    )
    rubric_version = models.ForeignKey("rubrics.RubricVersion", on_delete=models.PROTECT, related_name="judge_runs")
    # Kept even if versions are pruned: a grade always records the tree it was made against.
    rubric_hash = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MODEL)
    judge_name = models.CharField(max_length=200)
    score = models.FloatField(null=True, blank=True)
    graded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Model runs: where they came from and everything needed to reproduce them.
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_runs")
    endpoint = models.ForeignKey(ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    endpoint_snapshot = models.JSONField(default=dict, blank=True, help_text="The endpoint config as used (no key).")
    settings = models.JSONField(default=dict, blank=True, help_text="Judge settings: caps, retries, code-only.")
    code_only = models.BooleanField(default=False)
    split = models.CharField(max_length=10, blank=True, help_text="The paper's split when it was judged.")
    submission = models.CharField(max_length=1000, blank=True, help_text="Submission folder, relative to the data folder.")
    # Per node of the version's tree, in pre-order: {"scores": [...], "invalid": [...], "graded": [...]}.
    node_scores = models.JSONField(default=dict, blank=True)
    n_leaves = models.PositiveIntegerField(default=0)
    n_invalid = models.PositiveIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    duration_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.judge_name} on {self.paper.slug}"


class LeafGrade(models.Model):
    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="grades")
    node_index = models.PositiveIntegerField(help_text="Pre-order position of the leaf in the version's tree.")
    node_id = models.CharField(max_length=100)
    # Null when the leaf could not be graded: an invalid leaf is never stored as a 0.
    score = models.FloatField(null=True, blank=True)
    valid_score = models.BooleanField(default=True)
    invalid_reason = models.TextField(blank=True)
    explanation = models.TextField(blank=True)
    category = models.CharField(max_length=40, blank=True)
    prompt = models.JSONField(default=list, blank=True, help_text="The chat messages sent, in full.")
    response = models.TextField(blank=True)
    responses = models.JSONField(default=list, blank=True, help_text="Every answer, unusable ones included.")
    files = models.JSONField(default=list, blank=True, help_text="Submission files shown to the judge.")
    calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    latency_s = models.FloatField(default=0.0)
    # Human grades: who saved this leaf's grade and when (a human run may be graded over days).
    graded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="leaf_grades"
    )
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "node_index"]
        constraints = [models.UniqueConstraint(fields=["run", "node_index"], name="leaf_grade_unique")]


def max_check_timeout_s() -> int:
    """The longest timeout a check may have (KLONG_CHECK_MAX_TIMEOUT_S): a callable, so the
    migration does not freeze the number."""
    return settings.KLONG_CHECK_MAX_TIMEOUT_S


class RubricCheck(models.Model):
    """A programmatic leaf: a command run in the submission's sandbox decides it (exit 0 = pass).

    Stored beside the tree, keyed by the leaf's PaperBench id, so PaperBench export is unchanged.
    """

    paper = models.ForeignKey("papers.Paper", on_delete=models.CASCADE, related_name="rubric_checks")
    node_id = models.CharField(max_length=100, help_text="The leaf's id in the rubric tree.")
    command = models.TextField(
        max_length=10_000,
        help_text="Run with /bin/sh in a private copy of the submission, confined: no network, no host files, "
                  "limits on processes, memory and time (docs/security.md).",
    )
    timeout_s = models.FloatField(default=60.0, validators=[MinValueValidator(1.0), MaxValueValidator(max_check_timeout_s)])
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["paper", "node_id"]
        constraints = [models.UniqueConstraint(fields=["paper", "node_id"], name="rubric_check_unique")]

    def __str__(self) -> str:
        return f"{self.paper.slug}:{self.node_id}"
