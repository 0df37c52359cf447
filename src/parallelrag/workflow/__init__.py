"""Workflows: a DAG of agents (LLMs with tools), functions and conditions.

::

    from parallelrag import LlmClient
    from parallelrag.tools import tool
    from parallelrag.workflow import Node, Workflow

    @tool
    def lookup(query: str, k: int = 3) -> list[str]:
        \"\"\"Search the knowledge base.\"\"\"
        return [h.text for h in index.search(query, k=k)]   # blocking calls are fine in tools

    wf = Workflow("research")
    planner = wf.add(Node.agent("planner", prompt="Plan: {input}", llm=llm, tools=[lookup]))
    writer = wf.add(Node.agent("writer", prompt="Write from: {planner}", llm=llm))
    wf.connect(planner, writer)
    result = wf.run(input="What is X?")          # or: await wf.arun(...); for ev in wf.stream(...)
    result.outputs["writer"], result.usage, result.timings, result.trace, result.failed

Where things run: the graph executes on the parallelrag runtime loop; async tools and async
function nodes run there too; sync tools and sync function/condition nodes run in worker
threads (one pool per nesting level, see :mod:`parallelrag.workflow.threads`). A tool may
therefore call any sync or async parallelrag API, including ``wf.run`` of another workflow
(from a sync tool) or ``await wf.arun`` (from an async tool). The one thing that cannot work is
a *blocking* call from async code on the runtime loop (an async tool calling ``wf.run``): that
raises :class:`~parallelrag.errors.RuntimeUsageError` — the tool reports it to the model as an
error — instead of deadlocking.
"""

from ..errors import WorkflowError
from .events import EVENT_KINDS, EventKind, TokenUsage, WorkflowEvent, WorkflowResult
from .graph import Workflow
from .nodes import Node, NodeKind
from .threads import current_depth

__all__ = [
    "EVENT_KINDS",
    "EventKind",
    "Node",
    "NodeKind",
    "TokenUsage",
    "Workflow",
    "WorkflowError",
    "WorkflowEvent",
    "WorkflowResult",
    "current_depth",
]
