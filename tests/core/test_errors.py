"""The one error vocabulary (apps/core/domain.py): each kind answers its status through the API's
exception handler and through the pages' middleware, every app's error derives from a kind, and no
module catches one only to answer a status itself."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest
from django.urls import path
from rest_framework import serializers
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

import apps
from apps.core.domain import KINDS, Conflict, DomainError, Invalid, TooMany
from apps.core.tokens import TokenError
from apps.core.untrusted import JsonTooDeep, UnpackedTooLarge
from apps.datasets.services import DatasetError
from apps.jobs.services.control import JobStateError
from apps.jobs.services.launching import JobConfigError
from apps.judging.judge.submission import SubmissionError
from apps.judging.llm.config import EndpointConfigError
from apps.judging.llm.records import LLMError
from apps.papers.candidates import CandidateListError
from apps.papers.pdf import PdfError
from apps.papers.services import BundleError, BundleTooLarge, StalePaper
from apps.rubrics.models import RubricVersion
from apps.rubrics.services.errors import NodeNotFound, RubricRefused, StaleNode, TreeEditError
from apps.trajectories.exports import ExportLimit
from apps.trajectories.services import TrajectoryEditError, TrajectoryImportError
from apps.trajectories.split_service import ExportError, SplitConfigError
from apps.trajectories.uploads import UploadTooLarge
from klong_site.urls import urlpatterns as site_urlpatterns
from tests.rubrics.helpers import make_paper

ROOT = Path(apps.__file__).resolve().parent


def make_error(name: str) -> DomainError:
    """One error of the kind named, with what that kind carries (current state, retry-after)."""
    if name == "field":
        return Invalid("A token needs a name.", field="name")
    kind = next(k for k in KINDS if k.__name__ == name)
    if kind is Conflict:
        return Conflict("It changed meanwhile.", current="now")
    if kind is TooMany:
        return TooMany("Too many exports at once.", retry_after=30)
    return kind(f"The {name} error says why.")


class RaisingApi(APIView):
    # A Conflict's current state, as this view shows its objects.
    render_current = staticmethod(lambda obj: {"state": obj})

    def get(self, request, name: str):
        raise make_error(name)


def raising_page(request, name: str):
    raise make_error(name)


urlpatterns = [
    path("api/test-errors/<str:name>/", RaisingApi.as_view()),
    path("test-errors/<str:name>/", raising_page),
    *site_urlpatterns,  # the pages' layout links to them
]

pytestmark = pytest.mark.urls(__name__)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_each_kind_answers_its_status_through_the_api(client_for, kind):
    error = make_error(kind.__name__)
    response = client_for("viewer").get(f"/api/test-errors/{kind.__name__}/")
    assert isinstance(response, Response)  # DRF's handler answered, not the pages' middleware behind it
    assert response.status_code == kind.status_code
    assert response.json() == {"detail": error.message, **({"current": {"state": "now"}} if kind is Conflict else {})}
    assert response.get("Retry-After") == ("30" if kind is TooMany else None)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_each_kind_answers_its_status_on_a_page(client_for, kind):
    error = make_error(kind.__name__)
    client = client_for("viewer")
    page = client.get(f"/test-errors/{kind.__name__}/")
    assert page.status_code == kind.status_code
    html = page.content.decode()
    assert error.message in html and f"<h1>{kind.title}</h1>" in html
    assert page.get("Retry-After") == ("30" if kind is TooMany else None)
    # A page's script that asked for JSON gets the API's body.
    asked = client.get(f"/test-errors/{kind.__name__}/", headers={"Accept": "application/json"})
    assert (asked.status_code, asked.json()) == (kind.status_code, error.body())


def test_a_field_error_answers_in_drf_shape(client_for):
    response = client_for("viewer").get("/api/test-errors/field/")
    assert (response.status_code, response.json()) == (400, {"name": ["A token needs a name."]})


def test_a_page_that_lets_a_domain_error_through_answers_its_status_not_a_500(client_for):
    """Restoring a version that no longer validates (saved under older rules) was a 500."""
    paper = make_paper()
    version = paper.rubric_versions.get(number=1)
    tree = version.tree
    tree["sub_tasks"][1]["requirements"] = ""
    RubricVersion.objects.filter(pk=version.pk).update(tree_json=json.dumps(tree))
    draft_before = list(paper.rubric_nodes.values_list("node_id", "requirements"))
    response = client_for("curator").post(f"/rubrics/{paper.slug}/versions/1/restore/")
    assert response.status_code == 400 and "This tree has 1 error; fix them first" in response.content.decode()
    assert list(paper.rubric_nodes.values_list("node_id", "requirements")) == draft_before  # rolled back whole
    assert paper.rubric_versions.count() == 1


# ---------------------------------------------------------------------------------- the registry

# The app errors by meaning: each answers its kind's status wherever it is raised.
EXPECTED_STATUS = {
    RubricRefused: 400, TreeEditError: 400, NodeNotFound: 404, StaleNode: 409, StalePaper: 409,
    BundleError: 400, BundleTooLarge: 413, CandidateListError: 400, PdfError: 400,
    JobConfigError: 400, JobStateError: 409, SubmissionError: 400, EndpointConfigError: 400, LLMError: 503,
    DatasetError: 400, TrajectoryImportError: 400, TrajectoryEditError: 400, SplitConfigError: 400,
    ExportError: 400, ExportLimit: 429, UploadTooLarge: 413, JsonTooDeep: 400, UnpackedTooLarge: 413,
    TokenError: 400,
}


def app_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages([str(ROOT)], "apps.")
             if ".migrations" not in info.name and not info.name.endswith("__main__")]
    return [importlib.import_module(name) for name in names]


def subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *subclasses(sub)}
    return found


def test_every_app_error_derives_from_a_kind_and_answers_its_status():
    app_modules()
    errors = {cls for cls in subclasses(DomainError) if cls.__module__.startswith("apps.")
              and cls.__module__ != "apps.core.domain"}
    assert set(EXPECTED_STATUS) <= errors
    for cls in errors:
        kind = next((k for k in cls.__mro__ if k in KINDS), None)
        # A status comes from a kind, never set on an app's class.
        assert kind is not None and cls.status_code == kind.status_code, cls
    assert {cls: cls.status_code for cls in EXPECTED_STATUS} == EXPECTED_STATUS


# --------------------------------------------------------------- no except-block that only answers

RESPONSES = {"Response", "JsonResponse", "HttpResponse", "HttpResponseBadRequest"}


def _resolve(node: ast.expr, namespace: dict) -> object:
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr, None)
    return None


def _callee(statement: ast.stmt) -> ast.expr | None:
    value = statement.value if isinstance(statement, ast.Return) else getattr(statement, "exc", None)
    return value.func if isinstance(value, ast.Call) else None


def translating_handlers(source: str, namespace: dict) -> list[str]:
    """Except-blocks that catch a domain error only to answer it: their one statement returns a
    response, or raises a DRF error (the API's handler and the pages' middleware do both already)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ExceptHandler) or node.type is None or len(node.body) != 1:
            continue
        caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        classes = [_resolve(c, namespace) for c in caught]
        if not any(isinstance(c, type) and issubclass(c, DomainError) for c in classes):
            continue
        statement, callee = node.body[0], _callee(node.body[0])
        if callee is None:
            continue
        target = _resolve(callee, namespace)
        answers = isinstance(statement, ast.Return) and getattr(callee, "id", getattr(callee, "attr", "")) in RESPONSES
        reraises = isinstance(statement, ast.Raise) and isinstance(target, type) and issubclass(target, APIException)
        if answers or reraises:
            found.append(f"line {node.lineno}: except {ast.unparse(node.type)}")
    return found


def is_web_module(module: ModuleType) -> bool:
    """Pages and API: views.py, api.py, intake_views.py, checkpoint_api.py..., and core's account.py."""
    name = module.__name__.rsplit(".", 1)[-1]
    return name in {"views", "api", "account"} or name.endswith(("_views", "_api"))


def test_no_view_or_api_module_catches_a_domain_error_only_to_answer_a_status():
    wrong = []
    modules = [module for module in app_modules() if is_web_module(module)]
    assert len(modules) > 15  # every app's pages and API were found
    for module in modules:
        source = Path(module.__file__).read_text()
        wrong += [f"{module.__name__} {where}" for where in translating_handlers(source, vars(module))]
    assert wrong == []


def test_the_check_finds_a_translating_except_block_and_leaves_one_that_does_more():
    planted = '''
def update(request):
    try:
        save()
    except StaleNode as exc:
        return Response({"detail": str(exc)}, status=409)
    try:
        save()
    except (ValueError, DatasetError) as exc:
        raise serializers.ValidationError({"detail": str(exc)}) from None
    try:
        save()
    except NodeNotFound as exc:
        form.add_error(None, str(exc))
    try:
        save()
    except KeyError:
        return Response({}, status=400)
'''
    namespace = {"StaleNode": StaleNode, "DatasetError": DatasetError, "NodeNotFound": NodeNotFound,
                 "serializers": serializers}
    assert translating_handlers(planted, namespace) == ["line 5: except StaleNode",
                                                        "line 9: except (ValueError, DatasetError)"]
