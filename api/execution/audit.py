"""Timing fairness in the run audit (organizers): which execution hosts ran a run's cases, with their calibration.

All workers of one queue are meant to be one hardware class. Each host measures a fixed calibration workload when it
starts (``worker_nodes.calibration_s``); :func:`run_workers` lists, for one run, every worker that ran some of its
cases (``case_results.worker_name``) with its case count, its calibration, the median calibration of the hosts of
the run's queue and its deviation from it; a deviation over :data:`FLAG_DEVIATION` (10 %) is flagged: that host's
case times are not comparable with the others'.
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.models import CaseResult, Run, WorkerNode

from .identity import parse_queue_list

__all__ = ["run_workers", "FLAG_DEVIATION"]

FLAG_DEVIATION = 0.10


def run_workers(session: Session, run: Run) -> dict[str, Any]:
    """``{queue, queue_median_calibration_s, flagged: [names], workers: [{name, host, cpu_model, cores, cases,
    calibration_s, deviation, flagged}]}`` for ``run`` (its workers by name; the median over the queue's hosts)."""
    counts = dict(session.execute(select(CaseResult.worker_name, func.count()).where(CaseResult.run_id == run.id)
                                  .group_by(CaseResult.worker_name)).all())
    nodes = {n.name: n for n in session.scalars(select(WorkerNode))}
    queue = run.queue or ""
    peers = [c for n in nodes.values() if (c := n.calibration_s) and queue in parse_queue_list(n.queues or "")]
    peers += [c for name in counts  # a host that left the queue since still counts here
              if name in nodes and (c := nodes[name].calibration_s)
              and queue not in parse_queue_list(nodes[name].queues or "")]
    median = statistics.median(peers) if peers else None
    rows = []
    for name in sorted(counts, key=lambda n: (-counts[n], n or "")):
        node = nodes.get(name)
        cal = node.calibration_s if node is not None else None
        dev = (cal - median) / median if cal and median else None
        rows.append({"name": name or "(local)", "host": node.host if node else "", "cpu_model": node.cpu_model if node else "",
                     "cores": node.cores if node else None, "cases": int(counts[name]), "calibration_s": cal,
                     "deviation": dev, "flagged": dev is not None and abs(dev) > FLAG_DEVIATION})
    return {"queue": queue, "queue_median_calibration_s": median, "workers": rows,
            "flagged": [r["name"] for r in rows if r["flagged"]]}
