"""The public entry points above the pipeline: kd.build (kerneldsl/pipeline.py) and kd.schedule."""

from .pipeline import build
from .schedule.schedule import schedule

__all__ = ["build", "schedule"]
