"""The one engine: planner, scheduler, per-kernel effects, recovery, policies."""
