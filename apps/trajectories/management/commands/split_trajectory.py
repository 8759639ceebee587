from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.trajectories.models import Trajectory
from apps.trajectories.split_service import SplitConfigError, config_from, plan_for
from apps.trajectories.splitting import SplitError


class Command(BaseCommand):
    help = "Plan the training windows of a stored trajectory and print the split manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, help="Trajectory id.")
        parser.add_argument("--l-max", type=int, required=True, help="Context limit in tokens.")
        parser.add_argument("--overlap", type=int, help="Turns shared by adjacent windows.")
        parser.add_argument("--prefix-end", type=int, help="Last prefix turn (-1: none; default: pinned or auto).")
        parser.add_argument("--history-budget", type=float,
                            help="History tokens (an integer) or a fraction of L_max (<= 1).")
        parser.add_argument("--recent-full-turns", type=int, help="Most recent history turns kept whole.")
        parser.add_argument("--decay", type=float, help="Ratio the per-turn history cap shrinks per step back.")
        parser.add_argument("--train-overlap-once", action="store_true", help="Train each assistant turn once.")
        parser.add_argument("--json", action="store_true", help="Print the full manifest as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        trajectory = Trajectory.objects.filter(pk=options["id"]).first()
        if trajectory is None:
            raise CommandError(f"no trajectory {options['id']}")
        params = {
            "l_max": options["l_max"], "overlap_turns": options["overlap"], "prefix_end": options["prefix_end"],
            "history_budget": options["history_budget"], "recent_full_turns": options["recent_full_turns"],
            "decay": options["decay"], "train_overlap_once": options["train_overlap_once"] or None,
        }
        try:
            manifest, _texts = plan_for(trajectory, config_from(params, trajectory))
        except (SplitConfigError, SplitError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(manifest.to_json())
            return
        self.stdout.write(f"{len(manifest.windows)} windows, prefix turns 0-{manifest.prefix_end} "
                          f"({manifest.prefix_tokens} tokens), hash {manifest.content_hash}")
        for w in manifest.windows:
            self.stdout.write(f"window {w.number}: targets {w.target_start}-{w.target_end}, history "
                              f"{len(w.history)} turns (+{w.omitted_turns} omitted), {w.total_tokens} tokens"
                              f"{' OVERLONG' if w.overlong else ''}")
