"""Workflow nodes: agents (an LLM with tools), plain functions, and conditions."""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import WorkflowError

__all__ = ["Node", "NodeKind", "prompt_references"]

NodeKind = Literal["agent", "function", "condition"]

_RESERVED = frozenset({"input"})


def prompt_references(template: str, *, node: str = "?") -> list[str]:
    """The names a prompt template references: ``{input}``, ``{planner}``, ``{planner[x]}``...

    Raises :class:`WorkflowError` naming ``node`` for a malformed template or a positional
    field (``{}``, ``{0}``).
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise WorkflowError(f"node {node!r}: malformed prompt template: {e}", node=node) from None
    for _, field_name, spec, _ in parsed:
        if field_name is None:
            continue
        # nested fields in a format spec, e.g. {x:{width}}
        if spec and "{" in spec:
            names.extend(prompt_references(spec, node=node))
        head = field_name
        for sep in (".", "["):
            head = head.split(sep, 1)[0]
        if head == "" or head.isdigit():
            raise WorkflowError(
                f"node {node!r}: prompt has a positional field {{{field_name}}}; reference the "
                "workflow input as {input} and upstream nodes by name, e.g. {planner}",
                node=node,
            )
        if head not in names:
            names.append(head)
    return names


@dataclass(eq=False)
class Node:
    """One step of a :class:`~parallelrag.workflow.Workflow`. Build with :meth:`agent`,
    :meth:`function` or :meth:`condition`; nodes compare by identity and are named uniquely
    within a workflow.

    Common options: ``retries`` (extra attempts after a failure, with exponential backoff
    starting at ``retry_backoff_s``, doubling, capped at 30 s), ``timeout_s`` (per attempt;
    the attempt is cancelled and counts as a failure).
    """

    name: str
    kind: NodeKind
    prompt: str | None = None
    llm: Any = None
    tools: list[Any] = field(default_factory=list)
    fn: Callable[..., Any] | None = None
    system: str | None = None
    max_iterations: int = 5
    on_max_iterations: Literal["error", "last"] = "error"
    tool_errors: Literal["return", "raise"] = "return"
    tool_timeout_s: float | None = None
    max_tokens: int | None = None
    llm_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    retry_backoff_s: float = 0.5
    timeout_s: float | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def agent(
        cls,
        name: str,
        prompt: str,
        llm: Any,
        tools: Sequence[Any] | None = None,
        *,
        max_iterations: int = 5,
        system: str | None = None,
        on_max_iterations: Literal["error", "last"] = "error",
        tool_errors: Literal["return", "raise"] = "return",
        tool_timeout_s: float | None = None,
        max_tokens: int | None = None,
        llm_options: Mapping[str, Any] | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Node:
        """An LLM agent. ``prompt`` is a ``str.format`` template over ``{input}`` (the workflow
        input) and the outputs of upstream nodes by name (``{planner}``). ``llm`` is an
        :class:`~parallelrag.llm.LlmClient` (anything with ``acomplete_full``). ``tools``:
        :class:`~parallelrag.tools.Tool` objects or plain functions (converted with
        ``Tool.from_function``).

        The agent calls the LLM with the tool schemas, runs the tools it asks for (several
        concurrently), sends the results back and repeats until the model answers without tool
        calls, for at most ``max_iterations`` LLM calls; then ``on_max_iterations="error"``
        fails the node with :class:`WorkflowError`, ``"last"`` returns the last answer's text.
        A tool that raises or times out (``tool_timeout_s``, or the tool's own ``timeout_s``)
        sends ``"Error: ExcType: message"`` back to the model (``tool_errors="return"``) or
        fails the node (``"raise"``). ``llm_options`` are passed to ``acomplete_full``
        (e.g. ``temperature``).
        """
        node = cls(
            name=name,
            kind="agent",
            prompt=prompt,
            llm=llm,
            tools=list(tools or []),
            system=system,
            max_iterations=max_iterations,
            on_max_iterations=on_max_iterations,
            tool_errors=tool_errors,
            tool_timeout_s=tool_timeout_s,
            max_tokens=max_tokens,
            llm_options=dict(llm_options or {}),
            retries=retries,
            retry_backoff_s=retry_backoff_s,
            timeout_s=timeout_s,
        )
        node._check()
        return node

    @classmethod
    def function(
        cls,
        name: str,
        fn: Callable[..., Any],
        *,
        retries: int = 0,
        retry_backoff_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Node:
        """A plain Python step, sync or async; its return value is the node's output.

        How it receives its inputs (decided from its signature at ``validate()``):

        * parameters named ``input`` and/or after upstream nodes (all required ones, or
          ``**kwargs``) → called with those values by keyword, e.g.
          ``def clean(planner, input): ...``;
        * otherwise exactly one parameter → called with a dict of every visible value:
          ``{"input": ..., "<ancestor>": output, ...}``;
        * no parameters → called with none.

        Only ancestors (upstream nodes, transitively) are visible; an ancestor that was skipped
        by a condition is passed as ``None``. Sync functions run in a worker thread (never on
        the runtime loop), so they may call any blocking parallelrag API.
        """
        node = cls(
            name=name, kind="function", fn=fn, retries=retries,
            retry_backoff_s=retry_backoff_s, timeout_s=timeout_s,
        )
        node._check()
        return node

    @classmethod
    def condition(
        cls,
        name: str,
        fn: Callable[..., Any],
        *,
        retries: int = 0,
        retry_backoff_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Node:
        """A router: ``fn`` (called like a :meth:`function` node's) returns the name of the
        downstream node to follow (a list of names to follow several, or None for none). Its
        other direct successors are skipped, and so is everything downstream that has no
        completed input left. A name that is not a direct successor fails the node.
        """
        node = cls(
            name=name, kind="condition", fn=fn, retries=retries,
            retry_backoff_s=retry_backoff_s, timeout_s=timeout_s,
        )
        node._check()
        return node

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise WorkflowError("a node needs a non-empty str name")
        bad = set(self.name) & set(".[]{}:!")
        if bad:
            raise WorkflowError(
                f"node name {self.name!r} contains {''.join(sorted(bad))!r}; use letters, "
                "digits, '_' or '-'",
                node=self.name,
            )
        if self.name in _RESERVED:
            raise WorkflowError(f"node name {self.name!r} is reserved", node=self.name)
        if self.retries < 0:
            raise WorkflowError(f"node {self.name!r}: retries must be >= 0", node=self.name)
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise WorkflowError(f"node {self.name!r}: timeout_s must be > 0", node=self.name)
        if self.kind == "agent":
            if not isinstance(self.prompt, str):
                raise WorkflowError(f"node {self.name!r}: prompt must be a str", node=self.name)
            if self.llm is None or not hasattr(self.llm, "acomplete_full"):
                raise WorkflowError(
                    f"node {self.name!r}: llm must be an LlmClient (with acomplete_full), "
                    f"got {type(self.llm).__name__}",
                    node=self.name,
                )
            if self.max_iterations < 1:
                raise WorkflowError(
                    f"node {self.name!r}: max_iterations must be >= 1", node=self.name
                )
            if self.on_max_iterations not in ("error", "last"):
                raise WorkflowError(
                    f"node {self.name!r}: on_max_iterations must be 'error' or 'last'",
                    node=self.name,
                )
            if self.tool_errors not in ("return", "raise"):
                raise WorkflowError(
                    f"node {self.name!r}: tool_errors must be 'return' or 'raise'", node=self.name
                )
            prompt_references(self.prompt, node=self.name)
        elif not callable(self.fn):
            raise WorkflowError(f"node {self.name!r}: fn must be callable", node=self.name)

    @property
    def is_async(self) -> bool:
        """True when ``fn`` is a coroutine function (function / condition nodes)."""
        fn = self.fn
        if fn is None:
            return False
        return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )

    def references(self) -> list[str]:
        """Names this node reads: prompt fields for agents; matched parameters for functions."""
        if self.kind == "agent":
            assert self.prompt is not None
            return prompt_references(self.prompt, node=self.name)
        return []

    def __repr__(self) -> str:
        return f"Node.{self.kind}({self.name!r})"


# ---------------------------------------------------------------------- calling conventions
CallMode = Literal["none", "dict", "kwargs", "var_kwargs"]


@dataclass(frozen=True)
class CallPlan:
    """How to call a function / condition node's ``fn`` with its visible values."""

    mode: CallMode
    names: tuple[str, ...] = ()


def plan_call(node: Node, visible: Sequence[str]) -> CallPlan:
    """Decide how ``node.fn`` receives its inputs; ``visible`` = ``input`` + ancestor names."""
    assert node.fn is not None
    try:
        sig = inspect.signature(node.fn)
    except (TypeError, ValueError):
        return CallPlan("dict")
    params = [
        p for p in sig.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL,)
    ]
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if not named and not has_var_kw:
        return CallPlan("none")
    visible_set = set(visible)
    positional_only = [p for p in named if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    matched = [p.name for p in named if p.name in visible_set and not positional_only]
    required = [p for p in named if p.default is inspect.Parameter.empty]
    if (
        not positional_only
        and all(p.name in visible_set for p in required)
        and (matched or has_var_kw)
    ):
        return CallPlan("var_kwargs" if has_var_kw else "kwargs", tuple(matched))
    if len(required) <= 1:
        return CallPlan("dict")
    missing = [p.name for p in required if p.name not in visible_set]
    raise WorkflowError(
        f"node {node.name!r}: parameters {missing} of {getattr(node.fn, '__name__', 'fn')} are "
        f"neither 'input' nor upstream nodes (visible: {sorted(visible_set)}); declare one "
        "parameter to receive a dict of all inputs, or name parameters after upstream nodes",
        node=node.name,
    )


def call_args(plan: CallPlan, values: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments for ``fn`` under ``plan``."""
    if plan.mode == "none":
        return (), {}
    if plan.mode == "dict":
        return (dict(values),), {}
    if plan.mode == "var_kwargs":
        return (), dict(values)
    return (), {name: values.get(name) for name in plan.names}
