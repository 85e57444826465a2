"""Durable background jobs: a queue with two lanes, JSON job records, limits, and the dashboard's
job manager. `vitlens worker` processes (`vitlens.worker`) run the analyses.

    queue.py       the huey adapter: lanes, JSON messages, locations (SQLite or Redis)
    records.py     job records, `Job`, the sweep that recovers the jobs of workers that died
    limits.py      what a request and a session may ask of a shared server
    manager.py     `JobManager` (submit, join, poll, cancel, priorities, yielding)
    supervisor.py  the embedded worker processes of a one-machine install (start, nice, stop at exit)
"""
from .limits import Limits, env_number
from .manager import JobManager, manager
from .queue import Lane, Queue, is_redis, lane_of, message_args, queue_location
from .records import (ACTIVE, CANCELLED, DONE, FAILED, FINAL, QUEUED, RUNNING, Job, JobCancelled, JobYielded,
                      Records, stale_after, sweep_lost_jobs)

__all__ = ["ACTIVE", "CANCELLED", "DONE", "FAILED", "FINAL", "QUEUED", "RUNNING", "Job", "JobCancelled",
           "JobManager", "JobYielded", "Lane", "Limits", "Queue", "Records", "env_number", "is_redis", "lane_of", "manager",
           "message_args", "queue_location", "stale_after", "sweep_lost_jobs"]
