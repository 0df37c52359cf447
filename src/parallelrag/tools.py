"""Tools: Python functions an LLM can call, with a JSON schema generated from the signature.

::

    from parallelrag.tools import tool

    @tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather of a city.

        Args:
            city: the city name, e.g. "Paris".
            unit: temperature unit.
        '''
        ...

    get_weather.parameters        # JSON schema (object) from the signature and docstring
    get_weather.invoke({"city": "Paris"})          # validated / coerced, then called
    await get_weather.ainvoke({"city": "Paris"})   # async fns awaited, sync fns in a thread

Supported parameter types: ``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``dict[str, X]``,
``Literal[...]``, ``Optional[X]`` / ``X | None``, ``Enum`` subclasses, pydantic ``BaseModel``
subclasses (and any other type pydantic can validate). Parameters with defaults are not
required. Parameter descriptions come from a Google-style ``Args:`` section, a NumPy-style
``Parameters`` section or Sphinx ``:param name:`` lines.

The schema and the validation come from one pydantic model built from the signature, so what
the schema promises is exactly what :meth:`Tool.invoke` accepts.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

import pydantic

from .errors import ConfigError, ParallelRagError
from .runtime import run_sync, to_thread

__all__ = ["Tool", "ToolArgumentError", "as_tool", "parse_docstring", "tool"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolArgumentError(ParallelRagError, ValueError):
    """The arguments a model produced for a tool do not match the tool's schema."""


# --------------------------------------------------------------------------- docstrings
_SECTION_RE = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Returns|Return|Yields|Raises|Examples?|Notes?|"
    r"See Also|Attributes|References|Warnings?|Other Parameters|Keyword Args|Keyword Arguments)"
    r"\s*:?\s*$"
)
_GOOGLE_ARG_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_NUMPY_ARG_RE = re.compile(r"^(\*{0,2}\w+)\s*(?::\s*(.*))?$")
_SPHINX_RE = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into (description, {parameter: description}).

    Understands Google style (``Args:`` / ``Arguments:`` with ``name (type): text`` entries),
    NumPy style (``Parameters`` + dashes, ``name : type`` then indented text) and Sphinx
    ``:param name: text`` lines. The description is the text before the first section.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    desc_lines: list[str] = []
    i = 0
    n = len(lines)
    in_desc = True
    while i < n:
        line = lines[i]
        stripped = line.strip()
        sphinx = _SPHINX_RE.match(stripped)
        if sphinx:
            in_desc = False
            name, text = sphinx.group(1), sphinx.group(2).strip()
            i += 1
            while i < n and lines[i].strip() and not lines[i].strip().startswith(":"):
                text += " " + lines[i].strip()
                i += 1
            params[name] = text.strip()
            continue
        if stripped.startswith(":") and re.match(r"^:(returns?|raises?|rtype|type)\b", stripped):
            in_desc = False
            i += 1
            continue
        sec = _SECTION_RE.match(line)
        if sec:
            in_desc = False
            name = sec.group(1).lower()
            numpy = i + 1 < n and set(lines[i + 1].strip()) == {"-"}
            i += 2 if numpy else 1
            is_params = name in (
                "args", "arguments", "parameters", "params", "other parameters",
                "keyword args", "keyword arguments",
            )
            base = _indent(line)
            # the section body: NumPy style ends at the next "Header\n------"; Google style at
            # the first non-blank line indented no deeper than the header
            body: list[str] = []
            while i < n:
                nxt = lines[i]
                if numpy:
                    if _SECTION_RE.match(nxt) or (
                        i + 1 < n and nxt.strip() and set(lines[i + 1].strip()) == {"-"}
                    ):
                        break
                elif nxt.strip() and _indent(nxt) <= base:
                    break
                body.append(nxt)
                i += 1
            if is_params:
                params.update(_parse_param_block(body, numpy))
            continue
        if in_desc:
            desc_lines.append(line)
        i += 1
    description = "\n".join(desc_lines).strip()
    return description, params


def _parse_param_block(body: list[str], numpy: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    entries = [ln for ln in body if ln.strip()]
    if not entries:
        return out
    base = min(_indent(ln) for ln in entries)
    current: str | None = None
    for ln in body:
        if not ln.strip():
            continue
        if _indent(ln) == base:
            text = ln.strip()
            m = _NUMPY_ARG_RE.match(text) if numpy else _GOOGLE_ARG_RE.match(text)
            if m is None:
                current = None
                continue
            current = m.group(1).lstrip("*")
            out[current] = "" if numpy else (m.group(3) or "").strip()
        elif current is not None:
            out[current] = (out[current] + " " + ln.strip()).strip()
    return out


# --------------------------------------------------------------------------- the Tool type
def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's auto-generated ``title`` keys (noise for a model), keep everything else."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for k, v in schema.items():
            if k == "title" and isinstance(v, str):
                continue
            if k in ("properties", "$defs", "definitions") and isinstance(v, dict):
                out[k] = {name: _strip_titles(sub) for name, sub in v.items()}
            else:
                out[k] = _strip_titles(v)
        return out
    if isinstance(schema, list):
        return [_strip_titles(s) for s in schema]
    return schema


@dataclass(eq=False)
class Tool:
    """A callable tool: ``name``, ``description``, ``parameters`` (a JSON schema object), ``fn``.

    Build one with :func:`tool` / :meth:`from_function`; call it with :meth:`invoke` (sync) or
    :meth:`ainvoke` (async). Calling the Tool object itself calls the function directly.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | None = None
    is_async: bool = False
    _model: type[pydantic.BaseModel] | None = field(default=None, repr=False)
    _param_names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"tool name {self.name!r} must match ^[A-Za-z0-9_-]{{1,64}}$ (provider rule)"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """A Tool whose schema comes from ``fn``'s signature (type hints) and docstring."""
        if not callable(fn):
            raise ConfigError(f"a tool must be a callable, got {type(fn).__name__}")
        tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
        doc_desc, doc_params = parse_docstring(inspect.getdoc(fn))
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot read the signature of {tool_name!r}: {exc}") from None
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = {}
        fields_: dict[str, Any] = {}
        names: list[str] = []
        for pname, param in sig.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if pname in ("self", "cls") and not names and pname not in hints:
                continue
            ann: Any = hints.get(pname, param.annotation)
            if ann is inspect.Parameter.empty:
                ann = Any
            default: Any = ... if param.default is inspect.Parameter.empty else param.default
            desc = doc_params.get(pname)
            fields_[pname] = (
                ann,
                pydantic.Field(default=default, description=desc or None),
            )
            names.append(pname)
        try:
            model = pydantic.create_model(
                f"{tool_name}_arguments",
                __config__=pydantic.ConfigDict(arbitrary_types_allowed=False, extra="ignore"),
                **fields_,
            )
            schema = model.model_json_schema()
        except Exception as exc:
            raise ConfigError(f"cannot build a JSON schema for tool {tool_name!r}: {exc}") from None
        schema = _strip_titles(schema)
        schema.setdefault("properties", {})
        schema["type"] = "object"
        if not schema.get("required"):
            schema.pop("required", None)
        target = fn
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - an async __call__ method
        )
        return cls(
            name=tool_name,
            description=(description if description is not None else doc_desc).strip(),
            parameters=schema,
            fn=fn,
            is_async=is_async,
            _model=model,
            _param_names=tuple(names),
        )

    @classmethod
    def from_schema(cls, spec: Mapping[str, Any]) -> Tool:
        """A schema-only Tool (no function) from an OpenAI ``{"type": "function", ...}`` dict,
        an OpenAI ``function`` object, or an Anthropic ``{name, description, input_schema}``."""
        d = dict(spec)
        if d.get("type") == "function" and isinstance(d.get("function"), Mapping):
            d = dict(d["function"])
        name = d.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"tool schema has no name: {spec!r}")
        params = d.get("parameters", d.get("input_schema")) or {"type": "object", "properties": {}}
        return cls(name=name, description=str(d.get("description") or ""), parameters=dict(params))

    # ------------------------------------------------------------------ wire formats
    def to_openai(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}

    def to_anthropic(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "input_schema": self.parameters}
        if self.description:
            out["description"] = self.description
        return out

    # ------------------------------------------------------------------ calling
    def validate(self, arguments: Mapping[str, Any] | str | None) -> dict[str, Any]:
        """Validate and coerce ``arguments`` (a dict or a JSON string) → keyword arguments."""
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str | bytes):
            try:
                model_args = pydantic.TypeAdapter(dict[str, Any]).validate_json(arguments or "{}")
            except pydantic.ValidationError as exc:
                raise ToolArgumentError(
                    f"arguments for tool {self.name!r} are not a JSON object: {exc}"
                ) from None
            arguments = model_args
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(
                f"arguments for tool {self.name!r} must be an object, got {type(arguments).__name__}"
            )
        if self._model is None:
            return dict(arguments)
        try:
            inst = self._model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            raise ToolArgumentError(f"invalid arguments for tool {self.name!r}: {exc}") from None
        return {n: getattr(inst, n) for n in self._param_names}

    def invoke(self, arguments: Mapping[str, Any] | str | None = None) -> Any:
        """Validate ``arguments`` and call the function (async functions run on the runtime)."""
        fn = self._require_fn()
        kwargs = self.validate(arguments)
        if self.is_async:
            return run_sync(_await(fn(**kwargs)), alternative=f"await {self.name}.ainvoke(...)")
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            return run_sync(_await(result), alternative=f"await {self.name}.ainvoke(...)")
        return result

    async def ainvoke(self, arguments: Mapping[str, Any] | str | None = None) -> Any:
        """Validate ``arguments``; await async functions, run sync ones in a worker thread."""
        fn = self._require_fn()
        kwargs = self.validate(arguments)
        if self.is_async:
            return await fn(**kwargs)
        result = await to_thread(fn, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._require_fn()(*args, **kwargs)

    def _require_fn(self) -> Callable[..., Any]:
        if self.fn is None:
            raise ConfigError(f"tool {self.name!r} has a schema but no function to call")
        return self.fn


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


# --------------------------------------------------------------------------- decorator
@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function into a :class:`Tool`: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return Tool.from_function(fn, name=name, description=description)

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description)

    return wrap


def as_tool(obj: Tool | Callable[..., Any] | Mapping[str, Any]) -> Tool:
    """Normalise what ``tools=`` accepts: a Tool, a plain function, or a raw schema dict."""
    if isinstance(obj, Tool):
        return obj
    if isinstance(obj, Mapping):
        return Tool.from_schema(obj)
    if callable(obj):
        return Tool.from_function(obj)
    raise ConfigError(f"not a tool: {obj!r} (use a function, a Tool or a schema dict)")
