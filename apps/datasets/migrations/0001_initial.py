import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('jobs', '0004_model_checkpoint'),
        ('trajectories', '0002_review_annotations_meta'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Dataset',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200, unique=True)),
                ('threshold', models.FloatField(blank=True, help_text='Judge score a run needed to be kept.', null=True)),
                ('top_k', models.PositiveIntegerField(blank=True, help_text='At most this many runs kept per paper.', null=True)),
                ('notes', models.TextField(blank=True)),
                ('stats', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('origin_job', models.ForeignKey(blank=True, help_text='The distillation job that built it.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='datasets', to='jobs.job')),
                ('trajectories', models.ManyToManyField(blank=True, related_name='datasets', to='trajectories.trajectory')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
    ]
