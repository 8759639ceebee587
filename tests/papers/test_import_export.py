from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.papers.models import Paper
from apps.papers.services import find_bundles, import_paper, read_rubric_file
from apps.rubrics.models import RubricNode, RubricVersion
from apps.rubrics.services.edits import update_node
from apps.rubrics.services.errors import RubricRefused
from tests.rubrics.helpers import SAMPLE_FILES, SAMPLES, inner, leaf

pytestmark = pytest.mark.django_db


def _exact(data: bytes) -> str:
    """The JSON value with key order, as one string: equal strings mean an exact round trip."""
    return json.dumps(json.loads(data))


def test_every_shared_sample_is_found():
    assert len(SAMPLE_FILES) >= 15, SAMPLES


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_round_trips_through_the_database_and_the_export_command(sample: Path, tmp_path):
    result = import_paper(read_rubric_file(sample))
    assert RubricNode.objects.filter(paper=result.paper).count() == result.node_count
    call_command("export_paperbench", result.paper.slug, str(tmp_path), stdout=io.StringIO())
    exported = (tmp_path / result.paper.slug / "rubric.json").read_bytes()
    assert _exact(exported) == _exact(sample.read_bytes())


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_round_trips_through_the_api(sample: Path, client_for):
    result = import_paper(read_rubric_file(sample))
    client = client_for("viewer")
    tree = client.get(f"/api/papers/{result.paper.pk}/tree/")
    assert _exact(tree.content) == _exact(sample.read_bytes())
    version = client.get(f"/api/papers/{result.paper.pk}/tree/?version=1")
    assert _exact(version.content) == _exact(sample.read_bytes())
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/papers/{result.paper.pk}/export/").content))
    assert _exact(archive.read(f"{result.paper.slug}/rubric.json")) == _exact(sample.read_bytes())


def test_rubric_files_export_byte_for_byte_like_paperbench_writes_them(tmp_path):
    sample = SAMPLES / "rubrics" / "bam.rubric.json"
    paper = import_paper(read_rubric_file(sample)).paper
    call_command("export_paperbench", paper.slug, str(tmp_path), stdout=io.StringIO())
    assert (tmp_path / "bam" / "rubric.json").read_bytes() == sample.read_bytes()


def test_graded_trees_keep_scores_explanations_and_judge_metadata():
    sample = SAMPLES / "judge_eval" / "semantic-self-consistency.judge_eval.json"
    paper = import_paper(read_rubric_file(sample)).paper
    leaves = RubricNode.objects.filter(paper=paper, children__isnull=True)
    assert all(isinstance(row.score, float) and "judge_metadata" in row.key_order for row in leaves)
    assert any(row.explanation for row in leaves)


def test_the_flat_layout_brings_blacklist_and_config_along():
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "bam.rubric.json")).paper
    assert paper.slug == "bam" and paper.title.startswith("Batch and match")
    assert paper.blacklist == ["https://github.com/modichirag/GSM-VI"]


def test_a_none_blacklist_is_empty():
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "self-expansion.rubric.json")).paper
    assert paper.blacklist == []


def test_repeated_ids_import_with_a_warning_and_every_node_kept():
    sample = SAMPLES / "fixtures" / "hex_flag_context.json"
    result = import_paper(read_rubric_file(sample))
    assert [w.code for w in result.warnings] == ["duplicate_id"]
    assert result.node_count == 3 and RubricNode.objects.filter(paper=result.paper).count() == 3


def _bad_tree() -> dict:
    return inner("root", [leaf("a", weight=-1), inner("b", [leaf("c", category="Cooking")]), leaf("d", requirements=" ")])


def test_an_invalid_rubric_is_refused_whole_with_every_problem_listed(tmp_path):
    path = tmp_path / "bad.rubric.json"
    path.write_text(json.dumps(_bad_tree()))
    with pytest.raises(RubricRefused) as refused:
        import_paper(read_rubric_file(path))
    codes = sorted(p.code for p in refused.value.problems)
    assert codes == ["empty_requirements", "negative_weight", "unknown_task_category"]
    assert "root > 2 Node b is reproduced > 2.1" in " ".join(p.path for p in refused.value.problems)
    assert not Paper.objects.exists() and not RubricNode.objects.exists() and not RubricVersion.objects.exists()


def test_invalid_json_is_refused_with_its_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"id": "x",\n "weight": }')
    with pytest.raises(RubricRefused, match="line 2"):
        import_paper(read_rubric_file(path))


def test_the_import_command_prints_one_line_per_paper_with_id_and_node_count():
    out = io.StringIO()
    call_command("import_paperbench", str(SAMPLES / "rubrics"), stdout=out)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith(" ")]
    assert len(lines) == 5
    assert "bam\t1021 nodes\tcreated" in lines


def test_the_import_command_reads_a_folder_of_paper_folders(tmp_path):
    for name, tree in (("p-one", inner("r", [leaf("x")])), ("p-two", inner("r", [leaf("y"), leaf("z")]))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rubric.json").write_text(json.dumps(tree))
        (tmp_path / name / "paper.md").write_text(f"# Title of {name}\n\nBody")
    (tmp_path / "p-two" / "blacklist.txt").write_text("https://a.example\nhttps://b.example\n")
    out = io.StringIO()
    call_command("import_paperbench", str(tmp_path), stdout=out)
    assert out.getvalue().splitlines() == ["p-one\t2 nodes\tcreated", "p-two\t3 nodes\tcreated"]
    two = Paper.objects.get(slug="p-two")
    assert two.title == "Title of p-two" and two.blacklist == ["https://a.example", "https://b.example"]


def test_the_import_command_reports_refused_papers_and_fails(tmp_path):
    (tmp_path / "bad.rubric.json").write_text(json.dumps(_bad_tree()))
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 papers were refused"):
        call_command("import_paperbench", str(tmp_path), stdout=io.StringIO(), stderr=err)
    assert "negative" in err.getvalue()


def test_reimporting_keeps_one_paper_and_adds_no_version():
    call_command("import_paperbench", str(SAMPLES / "rubrics" / "bam.rubric.json"), stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_paperbench", str(SAMPLES / "rubrics" / "bam.rubric.json"), stdout=out)
    assert "unchanged" in out.getvalue() and Paper.objects.get().rubric_versions.count() == 1


def test_the_export_command_writes_the_whole_paper_folder(tmp_path):
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "bam.rubric.json")).paper
    paper.markdown, paper.addendum, paper.judge_addendum = "# Paper", "Addendum", "Judge notes"
    paper.save()
    call_command("export_paperbench", "bam", str(tmp_path), stdout=io.StringIO())
    names = sorted(p.name for p in (tmp_path / "bam").iterdir())
    assert names == ["addendum.md", "blacklist.txt", "config.yaml", "judge.addendum.md", "paper.md", "rubric.json"]
    assert (tmp_path / "bam" / "config.yaml").read_text().startswith("id: bam\n")


def test_export_of_an_old_version(tmp_path):
    paper = import_paper(read_rubric_file(SAMPLES / "fixtures" / "hex_flags.json")).paper
    root = paper.rubric_nodes.get(parent=None)
    update_node(paper, root.pk, root.version, {"requirements": "Changed"})
    call_command("export_paperbench", paper.slug, str(tmp_path), "--rubric-version", "1", stdout=io.StringIO())
    data = (tmp_path / paper.slug / "rubric.json").read_bytes()
    assert _exact(data) == _exact((SAMPLES / "fixtures" / "hex_flags.json").read_bytes())


def test_exporting_an_unknown_paper_fails_clearly(tmp_path):
    with pytest.raises(CommandError, match="No paper"):
        call_command("export_paperbench", "nope", str(tmp_path))


def test_a_round_trip_exports_what_was_imported_through_a_folder(tmp_path):
    paper = import_paper(read_rubric_file(SAMPLES / "rubrics" / "all-in-one.rubric.json")).paper
    call_command("export_paperbench", paper.slug, str(tmp_path), stdout=io.StringIO())
    bundle = find_bundles(tmp_path / paper.slug)[0]
    assert bundle.slug == "all-in-one" and set(bundle.texts) == {"blacklist", "config"}


def test_the_whole_shared_data_folder_imports_in_one_command():
    out = io.StringIO()
    call_command("import_paperbench", str(SAMPLES), stdout=out)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith(" ")]
    assert len(lines) == len(SAMPLE_FILES) == Paper.objects.count()
    assert "all-in-one-judge_eval\t234 nodes\tcreated" in lines and "all-in-one\t234 nodes\tcreated" in lines


def _tree_with(change) -> dict:
    tree = inner("root", [inner("group", [leaf("x"), leaf("y")]), leaf("z")])
    change(tree)
    return tree


BAD_TREES = {
    "missing_key": lambda t: t["sub_tasks"][1].pop("weight"),
    "weight_not_number": lambda t: t["sub_tasks"][1].update(weight="heavy"),
    "negative_weight": lambda t: t["sub_tasks"][1].update(weight=-1),
    "category_on_inner_node": lambda t: t["sub_tasks"][0].update(task_category="Code Development"),
    "missing_task_category": lambda t: t["sub_tasks"][1].update(task_category=None),
    "unknown_task_category": lambda t: t["sub_tasks"][1].update(task_category="Cooking"),
    "empty_requirements": lambda t: t["sub_tasks"][1].update(requirements=""),
    "zero_weight_sum": lambda t: [c.update(weight=0) for c in t["sub_tasks"][0]["sub_tasks"]],
}


@pytest.mark.parametrize("code", sorted(BAD_TREES))
def test_each_kind_of_bad_tree_is_refused_naming_the_node_path(code, tmp_path):
    path = tmp_path / "bad.rubric.json"
    path.write_text(json.dumps(_tree_with(BAD_TREES[code])))
    with pytest.raises(RubricRefused) as refused:
        import_paper(read_rubric_file(path))
    problem = next(p for p in refused.value.problems if p.code == code)
    if code in ("category_on_inner_node", "zero_weight_sum"):
        assert problem.path == "root > 1 Node group is reproduced"
    else:
        # Paths name the node by number plus the start of its requirements (none when empty).
        assert problem.path in ("root > 2 Leaf z is done", "root > 2")
    assert problem.message
    assert not Paper.objects.exists()
