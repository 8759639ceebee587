from __future__ import annotations

import json

import django.db.models.deletion
from django.db import migrations, models


def copy_tree_to_text(apps, schema_editor) -> None:
    # Existing versions (demo data) keep their tree; jsonb may already have re-ordered keys.
    RubricVersion = apps.get_model("rubrics", "RubricVersion")
    for version in RubricVersion.objects.all():
        version.tree_json = json.dumps(version.tree, ensure_ascii=False, separators=(",", ":"))
        version.save(update_fields=["tree_json"])


class Migration(migrations.Migration):

    dependencies = (
        ("papers", "0001_initial"),
        ("rubrics", "0001_initial"),
    )

    operations = (
        migrations.AddField(
            model_name="rubricversion",
            name="tree_json",
            field=models.TextField(default=""),
            preserve_default=False,
        ),
        migrations.RunPython(copy_tree_to_text, migrations.RunPython.noop),
        migrations.RemoveField(model_name="rubricversion", name="tree"),
        migrations.CreateModel(
            name="RubricNode",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("position", models.PositiveIntegerField(default=0)),
                ("node_id", models.TextField()),
                ("requirements", models.TextField(blank=True)),
                ("weight", models.JSONField()),
                ("task_category", models.TextField(blank=True, null=True)),
                ("finegrained_task_category", models.TextField(blank=True, null=True)),
                ("score", models.JSONField(blank=True, null=True)),
                ("valid_score", models.JSONField(blank=True, null=True)),
                ("explanation", models.JSONField(blank=True, null=True)),
                ("judge_metadata", models.JSONField(blank=True, null=True)),
                ("extra", models.JSONField(blank=True, default=dict)),
                ("key_order", models.JSONField(blank=True, null=True)),
                ("version", models.PositiveIntegerField(default=1)),
                ("paper", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="rubric_nodes", to="papers.paper")),
                ("parent", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="children", to="rubrics.rubricnode")),
            ],
            options={
                "ordering": ["paper", "parent_id", "position"],
                "indexes": [models.Index(fields=["paper", "parent", "position"], name="rubric_node_sibling_idx")],
            },
        ),
    )
