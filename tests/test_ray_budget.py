"""The Ray engine's budget coordinator: a provider's RPM/TPM split across the live actors and
re-split as actors come and go (the class runs as a Ray actor; its logic needs no Ray)."""

from __future__ import annotations

import time

import pytest

from parallelrag.distributed.ray_engine import RayOptions, _BudgetCoordinator, require_ray


def test_budget_is_split_across_live_actors_and_resplit_when_one_goes() -> None:
    coord = _BudgetCoordinator(rpm=3000, tpm=1_200_000, heartbeat_s=0.2)
    assert coord.share("a") == (3000, 1_200_000, 1)
    assert coord.share("b") == (1500, 600_000, 2)
    assert coord.share("a") == (1500, 600_000, 2)
    assert coord.share("c")[2] == 3
    time.sleep(0.3)  # a and b stop heartbeating (died, or the pool shrank)
    rpm, tpm, live = coord.share("c")
    assert (rpm, tpm, live) == (3000, 1_200_000, 1)
    coord.leave("c")
    assert coord.summary()["registrations"] == 3


def test_unknown_limits_stay_unknown_and_batches_count_retries() -> None:
    coord = _BudgetCoordinator(rpm=None, tpm=None, heartbeat_s=10)
    assert coord.share("a") == (None, None, 1)
    assert coord.begin("file-1") == 0
    assert coord.begin("file-2") == 0
    assert coord.begin("file-1") == 1  # the batch ran again (its actor died)
    assert coord.summary()["retried_batches"] == 1


def test_ray_options_validate_actor_counts() -> None:
    from parallelrag.distributed.ray_engine import _num_actors
    from parallelrag.errors import ConfigError

    class FakeRay:  # only cluster_resources is read
        @staticmethod
        def cluster_resources() -> dict[str, float]:
            return {"CPU": 4.0}

    assert _num_actors(FakeRay, RayOptions()) == 6  # 0.5 CPU each, one CPU left for tasks
    assert _num_actors(FakeRay, RayOptions(num_cpus=1)) == 3
    with pytest.raises(ConfigError, match="no CPU"):
        _num_actors(FakeRay, RayOptions(num_actors=4, num_cpus=1))
    with pytest.raises(ConfigError):
        _num_actors(FakeRay, RayOptions(num_actors=0))


def test_require_ray_names_the_extra_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from parallelrag.errors import ConfigError

    real = builtins.__import__

    def no_ray(name: str, *args: object, **kw: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"parallelrag\[ray\]"):
        require_ray()
