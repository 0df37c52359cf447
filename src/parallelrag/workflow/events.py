"""Events a workflow run reports, and the result it returns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import WorkflowError

__all__ = ["EVENT_KINDS", "EventKind", "TokenUsage", "WorkflowEvent", "WorkflowResult"]

EventKind = Literal[
    "workflow_started",
    "node_started",
    "llm_call",
    "tool_call",
    "node_completed",
    "node_failed",
    "node_skipped",
    "workflow_completed",
]

EVENT_KINDS: tuple[str, ...] = (
    "workflow_started",
    "node_started",
    "llm_call",
    "tool_call",
    "node_completed",
    "node_failed",
    "node_skipped",
    "workflow_completed",
)


@dataclass(frozen=True)
class WorkflowEvent:
    """One thing that happened during a run.

    ``kind``: one of :data:`EVENT_KINDS`. ``node``: the node it concerns (None for workflow
    events). ``time``: ``time.time()`` when it happened; ``elapsed_s``: seconds since the run
    started. ``data``: details, by kind:

    * ``workflow_started``: ``input``, ``nodes``;
    * ``node_started``: ``kind`` (node kind), ``attempt`` (1-based);
    * ``llm_call``: ``iteration``, ``duration_s``, ``usage`` (dict), ``finish_reason``,
      ``tool_calls`` (names requested), ``model``;
    * ``tool_call``: ``tool``, ``call_id``, ``arguments``, ``duration_s``, ``ok``, ``result``
      (the text sent back to the model, truncated to 500 characters), ``timed_out``;
    * ``node_completed``: ``duration_s``, ``attempts``, and ``branch`` for condition nodes;
    * ``node_failed``: ``error`` (text), ``error_type``, ``duration_s``, ``cancelled``,
      ``will_retry``, ``attempt``;
    * ``node_skipped``: ``reason``;
    * ``workflow_completed``: ``ok``, ``wall_s``, ``failed``, ``skipped``, ``timed_out`` and
      ``result`` (the :class:`WorkflowResult`).
    """

    kind: EventKind
    node: str | None
    time: float
    data: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    workflow: str = ""

    def __repr__(self) -> str:
        shown = {
            k: v for k, v in self.data.items()
            if not (k == "result" and self.kind == "workflow_completed")
        }
        where = f" node={self.node!r}" if self.node else ""
        return f"WorkflowEvent({self.kind}{where} +{self.elapsed_s:.3f}s {shown})"


@dataclass
class TokenUsage:
    """Tokens summed over every LLM call of a node or a run."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    llm_calls: int = 0

    def add(self, usage: Any) -> None:
        """Add an ``LlmResponse.usage`` (anything with the three token attributes, or None)."""
        self.llm_calls += 1
        if usage is None:
            return
        p = int(getattr(usage, "prompt_tokens", 0) or 0)
        c = int(getattr(usage, "completion_tokens", 0) or 0)
        t = int(getattr(usage, "total_tokens", 0) or 0) or p + c
        self.prompt_tokens += p
        self.completion_tokens += c
        self.total_tokens += t

    def merge(self, other: TokenUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.llm_calls += other.llm_calls

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "llm_calls": self.llm_calls,
        }


@dataclass
class WorkflowResult:
    """What a run produced.

    ``outputs``: node name → output (agents: the final answer text; functions: what they
    returned; conditions: the branch name(s) chosen), for nodes that completed.
    ``failed``: node name → exception (a node that failed itself keeps its own exception; a
    node that could not run because an upstream node failed gets a :class:`WorkflowError`
    naming that node; nodes cancelled by a timeout or ``fail_fast`` get a
    :class:`WorkflowError` saying so). ``skipped``: nodes not run because a condition routed
    around them. ``usage``: tokens summed over all LLM calls (``node_usage`` per node);
    ``timings``: seconds per node (all attempts, including backoff); ``trace``: every event.
    """

    workflow: str
    input: Any
    outputs: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    node_usage: dict[str, TokenUsage] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    trace: list[WorkflowEvent] = field(default_factory=list)
    wall_s: float = 0.0
    timed_out: bool = False
    started_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when no node failed."""
        return not self.failed

    @property
    def output(self) -> Any:
        """The output of the last node in graph order that completed (None if none did)."""
        if not self.outputs:
            return None
        return next(reversed(self.outputs.values()))

    def raise_for_errors(self) -> None:
        """Raise a :class:`WorkflowError` for the first failed node (its cause chained)."""
        for name, exc in self.failed.items():
            if isinstance(exc, WorkflowError):
                raise exc
            raise WorkflowError(
                f"workflow {self.workflow!r}: node {name!r} failed: {type(exc).__name__}: {exc}",
                node=name,
            ) from exc

    def __repr__(self) -> str:
        return (
            f"WorkflowResult({self.workflow!r}, outputs={sorted(self.outputs)}, "
            f"failed={sorted(self.failed)}, skipped={self.skipped}, wall_s={self.wall_s:.3f})"
        )
