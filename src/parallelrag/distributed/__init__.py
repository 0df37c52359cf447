"""Execution beyond one machine: the ingest pipeline and batch answers on a Ray cluster.

``Index.ingest(paths, engine="ray")`` and ``Index.answer_many(questions, engine="ray")`` run here;
``pip install 'parallelrag[ray]'`` brings ``ray[data]``. Importing this package does not import
Ray: :func:`require_ray` does, with a :class:`~parallelrag.errors.ConfigError` naming the extra
when it is missing.
"""

from __future__ import annotations

from .ray_engine import RayOptions, ray_answer_many, ray_ingest, require_ray

__all__ = ["RayOptions", "ray_answer_many", "ray_ingest", "require_ray"]
