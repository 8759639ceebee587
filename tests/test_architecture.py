"""The large shape of the code: imports run one way (klong_site -> worker -> apps, never back), and no
project import hides in a function body (where it would hide a cycle too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apps", "worker", "klong_site")
# Third-party imports that may stay inside a function, each under a "# lazy: <reason>" comment.
LAZY = {"torch", "transformers", "scipy", "sklearn", "numpy", "mistral_common", "openai_harmony", "trl"}


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def inner_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, function, module) of every import inside a function body, AppConfig.ready excepted
    (Django's documented place to connect signals once models are loaded)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != "ready":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found += [(sub.lineno, node.name, alias.name) for alias in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    found.append((sub.lineno, node.name, "." * sub.level + (sub.module or "")))
    return found


def test_imports_run_one_way():
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_no_import_hides_in_a_function_except_lazy_heavy_libraries_with_a_reason():
    wrong = []
    for path in project_files():
        lines = path.read_text().splitlines()
        for line, function, module in inner_imports(path):
            # the reason sits above the first import of a block of imports
            above = next((text.strip() for text in reversed(lines[: line - 1])
                          if not text.strip().startswith(("import ", "from ", ")")) and text.strip()
                          and not text.strip().endswith(",")), "")
            if module.split(".")[0] not in LAZY or not above.startswith("# lazy:"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} {function}() imports {module}")
    assert wrong == []


def test_the_contract_catches_an_import_upwards():
    """The contract is not vacuous: the same check on a copy of apps/ with one upward import fails."""
    planted = ROOT / "apps" / "_planted_upward_import.py"
    planted.write_text("import worker.tasks  # noqa: F401\n")
    try:
        done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                              text=True)
    finally:
        planted.unlink()
    assert done.returncode != 0 and "apps._planted_upward_import -> worker.tasks" in done.stdout
