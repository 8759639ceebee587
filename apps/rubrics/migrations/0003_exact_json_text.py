# Node JSON columns become text: jsonb (PostgreSQL) re-orders object keys, exact export must not.

from django.db import migrations

import apps.rubrics.models


class Migration(migrations.Migration):

    dependencies = (
        ('rubrics', '0002_rubric_nodes_and_exact_versions'),
    )

    operations = (
        migrations.AlterField(
            model_name='rubricnode',
            name='explanation',
            field=apps.rubrics.models.ExactJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='extra',
            field=apps.rubrics.models.ExactJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='judge_metadata',
            field=apps.rubrics.models.ExactJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='key_order',
            field=apps.rubrics.models.ExactJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='score',
            field=apps.rubrics.models.ExactJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='valid_score',
            field=apps.rubrics.models.ExactJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='rubricnode',
            name='weight',
            field=apps.rubrics.models.ExactJSONField(),
        ),
    )
