"""Ray tests run only inside a network namespace whose one interface is loopback.

Ray's servers listen on every interface, so these tests must not run on the host network: the
Makefile's ``unit`` target runs them as ``.ci/netns pytest tests/distributed`` (``unshare -n``
with ``lo`` up). Outside such a namespace they are not collected at all (not skipped and counted):
the plain ``pytest`` run of the rest of the suite leaves them to that second run.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

ISOLATED = [name for _, name in socket.if_nameindex()] == ["lo"]

if not ISOLATED:
    collect_ignore_glob = ["test_*.py"]
else:
    # Ray's native library first: a C++ library loaded before it (usearch's) breaks its
    # std::regex use in ray.init
    import ray  # noqa: F401


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray (2 CPUs) for the whole session, inside the loopback-only namespace."""
    assert ISOLATED, "Ray tests must run inside .ci/netns (loopback only)"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    try:
        yield ray
    finally:
        ray.shutdown()
