"""The simulated OpenAI-/Anthropic-compatible HTTP server (aiohttp, 127.0.0.1 only).

:class:`SimApp` holds the state and request handlers; :class:`SimServer` runs one in its own
thread and event loop; :class:`SimProcess` runs one in a subprocess
(``python -m parallelrag.sim serve``) and talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson
from aiohttp import web

from parallelrag.errors import ConfigError
from parallelrag.sim.config import LatencyModel, SimConfig, parse_latency
from parallelrag.sim.core import count_tokens, embedding_fragments, sim_rerank_scores
from parallelrag.sim.protocol import (
    BadRequest,
    ChatPlan,
    plan_anthropic,
    plan_openai,
    split_fragments,
    split_stream,
)

__all__ = ["SimApp", "SimProcess", "SimServer", "format_duration"]

T = TypeVar("T")

LOG_MAX = 100_000
MODELS = (
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-5",
)
_LOOPBACK = ("127.0.0.1", "localhost")
_FAULTS = ("500", "503", "timeout", "reset", "malformed", "truncate")
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def format_duration(seconds: float) -> str:
    """An OpenAI-style duration string: ``"120ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m5s"``."""
    seconds = max(0.0, seconds)
    if seconds == 0.0:
        return "0s"
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    hours, rem = divmod(seconds, 3600.0)
    minutes, secs = divmod(rem, 60.0)
    s = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{s}s"
    if minutes >= 1:
        return f"{int(minutes)}m{s}s"
    return f"{s}s"


class _Bucket:
    """A token bucket: capacity ``limit * window / 60``, refilled at ``limit / 60`` per second."""

    def __init__(self, limit: float, window_s: float) -> None:
        self.limit = limit
        self.capacity = limit * window_s / 60.0
        self.rate = limit / 60.0
        self.level = self.capacity
        self.t = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 = now). Larger than capacity: fits when full."""
        if amount > self.capacity:
            if self.level >= self.capacity - 1e-9:
                return 0.0
            return (self.capacity - self.level) / self.rate
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate

    def reset_in(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


def _new_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_endpoint": {},
        "in_flight": 0,
        "max_in_flight": 0,
        "rate_limited": 0,
        "overloaded": 0,
        "faults": dict.fromkeys(_FAULTS, 0),
        "status_counts": {},
        "tokens": 0,
        "embedding_inputs": 0,
        "client_disconnects": 0,
        "bad_requests": 0,
    }


class SimApp:
    """State and handlers of one simulated server; :meth:`make_app` builds the aiohttp app.

    All methods must run on the event loop that serves the app.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._latency: LatencyModel = parse_latency(self.config.latency)
        self._rng = random.Random(self.config.seed)
        self._rpm: _Bucket | None = None
        self._tpm: _Bucket | None = None
        self._make_buckets()
        self.stats: dict[str, Any] = _new_stats()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_MAX)
        self._n_requests = 0
        self._n_calls = 0

    # --- configuration and stats ---------------------------------------------------------

    def _make_buckets(self) -> None:
        c = self.config
        self._rpm = _Bucket(c.rpm, c.rate_window_s) if c.rpm else None
        self._tpm = _Bucket(c.tpm, c.rate_window_s) if c.tpm else None

    def update(self, **changes: Any) -> SimConfig:
        """Apply SimConfig field changes live (buckets are refilled when their limits change)."""
        new = self.config.replace(**changes)
        old = self.config
        self.config = new
        self._latency = parse_latency(new.latency)
        if new.seed != old.seed:
            self._rng = random.Random(new.seed)
        if (new.rpm, new.tpm, new.rate_window_s) != (old.rpm, old.tpm, old.rate_window_s):
            self._make_buckets()
        return new

    def snapshot(self) -> dict[str, Any]:
        s = dict(self.stats)
        for key in ("by_endpoint", "faults", "status_counts"):
            s[key] = dict(s[key])
        return s

    def reset_stats(self) -> None:
        in_flight = self.stats["in_flight"]
        self.stats = _new_stats()
        self.stats["in_flight"] = in_flight
        self.log.clear()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # --- dispatch --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        if path.rsplit("/", 2)[-2:-1] == ["sim"]:
            return await self._control(request, path.rsplit("/", 1)[-1])
        last = path.rsplit("/", 1)[-1]
        if last == "embeddings" and request.method == "POST":
            return await self._api(request, "embeddings", "openai")
        if last == "completions" and path.endswith("chat/completions") and request.method == "POST":
            return await self._api(request, "chat", "openai")
        if last == "messages" and request.method == "POST":
            return await self._api(request, "messages", "anthropic")
        if last == "models" and request.method == "GET":
            return await self._api(request, "models", "openai")
        if last == "rerank" and request.method == "POST":
            return await self._api(request, "rerank", "openai")
        return await self._api(request, "other", "openai")

    async def _control(self, request: web.Request, what: str) -> web.StreamResponse:
        try:
            if what == "stats" and request.method == "GET":
                return _json_response(self.snapshot())
            if what == "log" and request.method == "GET":
                since = int(request.query.get("since", "0"))
                return _json_response(list(self.log)[since:])
            if what == "reset" and request.method == "POST":
                self.reset_stats()
                return _json_response({"ok": True})
            if what == "config" and request.method == "GET":
                return _json_response(self.config.to_dict())
            if what == "config" and request.method == "POST":
                changes = orjson.loads(await request.read() or b"{}")
                if not isinstance(changes, dict):
                    raise ConfigError("config changes must be a JSON object")
                return _json_response(self.update(**changes).to_dict())
        except (ConfigError, ValueError, TypeError) as exc:
            return _json_response(
                {
                    "error": {
                        "message": str(exc),
                        "type": "invalid_request_error",
                        "code": "invalid_config",
                    }
                },
                status=400,
            )
        return _json_response(
            {
                "error": {
                    "message": "not found",
                    "type": "invalid_request_error",
                    "code": "not_found",
                }
            },
            status=404,
        )

    # --- the API endpoints -----------------------------------------------------------------

    async def _api(self, request: web.Request, endpoint: str, flavor: str) -> web.StreamResponse:
        st = self.stats
        self._n_requests += 1
        rid = f"req_{self._n_requests}"
        st["requests"] += 1
        st["by_endpoint"][endpoint] = st["by_endpoint"].get(endpoint, 0) + 1
        rec: dict[str, Any] = {
            "t": time.time(),
            "t_end": None,
            "path": request.path,
            "status": None,
            "request_id": rid,
            "n_inputs": 0,
            "tokens": 0,
            "fault": None,
        }
        headers: dict[str, str] = {"x-request-id": rid}
        try:
            return await self._serve(request, endpoint, flavor, rec, headers)
        except asyncio.CancelledError:
            self._disconnected(rec)
            raise
        finally:
            rec["t_end"] = time.time()
            status = rec["status"]
            key = str(status) if status is not None else "none"
            # Stats may have been reset while this request ran: count into the current ones.
            sc = self.stats["status_counts"]
            sc[key] = sc.get(key, 0) + 1
            self.log.append(rec)

    def _disconnected(self, rec: dict[str, Any]) -> None:
        """Count a client that went away before its response was complete (status 499)."""
        if rec.get("disconnected"):
            return
        rec["disconnected"] = True
        self.stats["client_disconnects"] += 1
        rec["status"] = 499

    def _error(
        self,
        flavor: str,
        status: int,
        message: str,
        headers: dict[str, str],
        rec: dict[str, Any],
        *,
        etype: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        rec["status"] = status
        if flavor == "anthropic":
            atype = etype or {
                400: "invalid_request_error",
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
                503: "overloaded_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            body: dict[str, Any] = {"type": "error", "error": {"type": atype, "message": message}}
        else:
            otype = etype or {
                400: "invalid_request_error",
                401: "invalid_request_error",
                404: "invalid_request_error",
                429: "requests",
            }.get(status, "server_error")
            body = {"error": {"message": message, "type": otype, "param": None, "code": code}}
        return web.Response(
            body=orjson.dumps(body), status=status, content_type=_JSON, headers=headers
        )

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.api_key
        if key is None:
            return True
        h = request.headers
        auth = h.get("Authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip() == key:
            return True
        return h.get("api-key") == key or h.get("x-api-key") == key

    def _rate_headers(self, flavor: str) -> dict[str, str]:
        """OpenAI ``x-ratelimit-*`` headers (and Anthropic's on the messages route)."""
        out: dict[str, str] = {}
        now = time.monotonic()
        for name, b in (("requests", self._rpm), ("tokens", self._tpm)):
            if b is None:
                continue
            b.refill(now)
            remaining = str(max(0, math.floor(b.level)))
            out[f"x-ratelimit-limit-{name}"] = str(int(b.limit))
            out[f"x-ratelimit-remaining-{name}"] = remaining
            out[f"x-ratelimit-reset-{name}"] = format_duration(b.reset_in())
            if flavor == "anthropic":
                reset_at = datetime.fromtimestamp(time.time() + b.reset_in(), tz=UTC)
                out[f"anthropic-ratelimit-{name}-limit"] = str(int(b.limit))
                out[f"anthropic-ratelimit-{name}-remaining"] = remaining
                out[f"anthropic-ratelimit-{name}-reset"] = reset_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    def _rate_check(self, tokens: int) -> tuple[float, str]:
        """Take 1 request and ``tokens`` tokens, or return (seconds to wait, which limit)."""
        now = time.monotonic()
        wait = 0.0
        which = ""
        if self._rpm is not None:
            self._rpm.refill(now)
            w = self._rpm.wait_for(1.0)
            if w > wait:
                wait, which = w, "requests"
        if self._tpm is not None:
            self._tpm.refill(now)
            w = self._tpm.wait_for(float(tokens))
            if w > wait:
                wait, which = w, "tokens"
        if wait > 0:
            return wait, which
        if self._rpm is not None:
            self._rpm.level -= 1.0
        if self._tpm is not None:
            self._tpm.level -= float(tokens)
        return 0.0, ""

    def _model_from_path(self, request: web.Request) -> str | None:
        parts = request.path.split("/")
        if "deployments" in parts:
            i = parts.index("deployments")
            if i + 1 < len(parts) and parts[i + 1]:
                return parts[i + 1]
        return None

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        flavor: str,
        rec: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        cfg = self.config
        st = self.stats
        if endpoint == "other":
            return self._error(
                flavor,
                404,
                f"no route for {request.method} {request.path}",
                headers,
                rec,
                code="not_found",
            )
        if not self._authorized(request):
            headers.update(self._rate_headers(flavor))
            return self._error(
                flavor, 401, "Incorrect API key provided.", headers, rec, code="invalid_api_key"
            )
        if endpoint == "models":
            rec["status"] = 200
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "parallelrag-sim"}
                for m in MODELS
            ]
            return web.Response(
                body=orjson.dumps({"object": "list", "data": data}),
                content_type=_JSON,
                headers=headers,
            )
        if flavor == "anthropic" and "anthropic-version" not in request.headers:
            st["bad_requests"] += 1
            return self._error(flavor, 400, "anthropic-version: header is required", headers, rec)

        # Parse and validate.
        try:
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"could not parse the JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise BadRequest("the JSON body must be an object")
            model = self._model_from_path(request) or body.get("model")
            rerank: dict[str, Any] | None = None
            emb: dict[str, Any] | None
            plan: ChatPlan | None
            if endpoint == "rerank":  # TEI's format has no model
                rerank = self._parse_rerank(body, model)
                emb = None
                plan = None
                rate_tokens = rerank["tokens"]
                rec["n_inputs"] = len(rerank["texts"])
            elif not isinstance(model, str) or not model:
                raise BadRequest("you must provide a model parameter", param="model")
            elif endpoint == "embeddings":
                emb = self._parse_embeddings(body, model)
                plan = None
                rate_tokens = emb["tokens"]
                rec["n_inputs"] = len(emb["texts"])
            else:
                emb = None
                plan = (plan_openai if flavor == "openai" else plan_anthropic)(
                    body, model, cfg.reply_words
                )
                rate_tokens = plan.rate_tokens
                rec["n_inputs"] = 1
        except BadRequest as exc:
            st["bad_requests"] += 1
            headers.update(self._rate_headers(flavor))
            return self._error(flavor, 400, exc.message, headers, rec, code=exc.code)

        # Overload, then rate limits.
        if cfg.max_in_flight is not None and st["in_flight"] >= cfg.max_in_flight:
            st["overloaded"] += 1
            headers.update(self._rate_headers(flavor))
            headers["retry-after-ms"] = "50"
            headers["retry-after"] = "1"
            return self._error(
                flavor,
                cfg.overload_status,
                "The server is overloaded; retry shortly.",
                headers,
                rec,
                etype="overloaded_error" if flavor == "anthropic" else "server_error",
                code="overloaded",
            )
        wait, which = self._rate_check(rate_tokens)
        headers.update(self._rate_headers(flavor))
        if wait > 0:
            st["rate_limited"] += 1
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            return self._error(
                flavor,
                429,
                f"Rate limit reached for {which} per min. Please try again in "
                f"{format_duration(wait)}.",
                headers,
                rec,
                etype=None if flavor == "anthropic" else which,
                code="rate_limit_exceeded",
            )

        # Accepted: serve it.
        st["in_flight"] += 1
        if st["in_flight"] > st["max_in_flight"]:
            st["max_in_flight"] = st["in_flight"]
        try:
            return await self._serve_accepted(request, flavor, rec, headers, emb, plan, rerank)
        finally:
            # reset_stats() carries in_flight over to the new counters.
            self.stats["in_flight"] -= 1

    def _parse_embeddings(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        cfg = self.config
        inp = body.get("input")
        texts: list[str]
        token_counts: list[int]
        if isinstance(inp, str):
            texts = [inp]
            token_counts = [count_tokens(inp)] if inp else [0]
        elif (
            isinstance(inp, list)
            and inp
            and all(isinstance(x, int) and not isinstance(x, bool) for x in inp)
        ):
            texts = [" ".join(map(str, inp))]
            token_counts = [len(inp)]
        elif isinstance(inp, list):
            if not inp:
                raise BadRequest("'input' must not be empty", param="input")
            texts = []
            token_counts = []
            for x in inp:
                if isinstance(x, str):
                    texts.append(x)
                    token_counts.append(count_tokens(x) if x else 0)
                elif isinstance(x, list) and all(
                    isinstance(t, int) and not isinstance(t, bool) for t in x
                ):
                    texts.append(" ".join(map(str, x)))
                    token_counts.append(len(x))
                else:
                    raise BadRequest(
                        "'input' must be a string, an array of strings, or token arrays",
                        param="input",
                    )
        else:
            raise BadRequest("'input' must be a string or an array", param="input")
        if len(texts) > cfg.max_inputs:
            raise BadRequest(
                f"'input' has {len(texts)} items; at most {cfg.max_inputs} are allowed",
                param="input",
            )
        total = 0
        for i, (t, n) in enumerate(zip(texts, token_counts, strict=True)):
            if not t:
                raise BadRequest(f"'input[{i}]' is empty", param="input")
            if n > cfg.max_input_tokens:
                raise BadRequest(
                    f"This model's maximum context length is {cfg.max_input_tokens} tokens, "
                    f"however input[{i}] has {n} tokens.",
                    param="input",
                )
            total += n
        if total > cfg.max_request_tokens:
            raise BadRequest(
                f"Requested {total} tokens, max {cfg.max_request_tokens} tokens per request",
                code="max_tokens_per_request",
                param="input",
            )
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise BadRequest(
                "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
        if fmt == "base64" and not cfg.support_base64:
            raise BadRequest("encoding_format 'base64' is not supported", param="encoding_format")
        dim = body.get("dimensions")
        if dim is None:
            dim = 3072 if model == "text-embedding-3-large" else cfg.embedding_dim
        elif isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise BadRequest(
                "'dimensions' must be an integer between 1 and 65536", param="dimensions"
            )
        return {"texts": texts, "tokens": max(total, 1), "fmt": fmt, "dim": dim, "model": model}

    # --- accepted requests ------------------------------------------------------------------

    def _draw_fault(self) -> str | None:
        c = self.config
        probs = (
            c.fault_500,
            c.fault_503,
            c.fault_timeout,
            c.fault_reset,
            c.fault_malformed,
            c.fault_truncate,
        )
        if not any(probs):
            return None
        u = self._rng.random()
        acc = 0.0
        for name, p in zip(_FAULTS, probs, strict=True):
            acc += p
            if u < acc:
                return name
        return None

    async def _serve_accepted(
        self,
        request: web.Request,
        flavor: str,
        rec: dict[str, Any],
        headers: dict[str, str],
        emb: dict[str, Any] | None,
        plan: ChatPlan | None,
        rerank: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        cfg = self.config
        st = self.stats
        fault = self._draw_fault()
        if fault is not None:
            rec["fault"] = fault
            st["faults"][fault] += 1
        if emb is not None:
            tokens = emb["tokens"]
            st["embedding_inputs"] += len(emb["texts"])
            work_tokens = tokens
        elif rerank is not None:
            tokens = work_tokens = rerank["tokens"]
        else:
            assert plan is not None
            tokens = plan.prompt_tokens + plan.completion_tokens
            work_tokens = plan.completion_tokens
        rec["tokens"] = tokens
        st["tokens"] += tokens

        streaming = plan is not None and plan.stream
        delay = self._latency.sample(self._rng)
        if not streaming:
            delay += cfg.per_token_s * work_tokens
        if fault == "timeout":
            delay = cfg.timeout_hang_s
        if delay > 0:
            await asyncio.sleep(delay)

        if fault in ("500", "503"):
            status = int(fault)
            if status == 503:
                headers["retry-after-ms"] = "100"
            return self._error(
                flavor,
                status,
                "The server had an error while processing your request."
                if status == 500
                else "The service is temporarily unavailable.",
                headers,
                rec,
                etype="overloaded_error" if flavor == "anthropic" and status == 503 else None,
            )
        if fault == "reset":
            rec["status"] = 0
            _abort(request, rst=True)
            return web.Response(status=500)
        if fault == "malformed":
            rec["status"] = 200
            if streaming:
                resp = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
                await resp.prepare(request)
                await resp.write(b'data: {"id": "broken", "choices": [\n\ndata: [DONE]\n\n')
                return resp
            return web.Response(
                body=b'{"object": "list", "data": [{"index": 0,, }',
                content_type=_JSON,
                headers=headers,
            )

        if streaming:
            assert plan is not None
            if flavor == "openai":
                return await self._stream_openai(request, plan, rec, headers, fault)
            return await self._stream_anthropic(request, plan, rec, headers, fault)

        if emb is not None:
            body = self._embedding_body(emb)
        elif rerank is not None:
            body = self._rerank_body(rerank)
        elif flavor == "openai":
            assert plan is not None
            body = orjson.dumps(self._openai_completion(plan, rec["request_id"]))
        else:
            assert plan is not None
            body = orjson.dumps(self._anthropic_message(plan, rec["request_id"]))
        rec["status"] = 200
        if fault == "truncate":
            resp = web.StreamResponse(headers={**headers, "Content-Type": _JSON})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            _abort(request)
            return resp
        return web.Response(body=body, content_type=_JSON, headers=headers)

    def _parse_rerank(self, body: dict[str, Any], model: Any) -> dict[str, Any]:
        """A ``/rerank`` request: Cohere/Jina (``documents``, ``top_n``, ``return_documents``)
        or TEI (``texts``, no model)."""
        tei = "texts" in body and "documents" not in body
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise BadRequest("'query' must be a non-empty string", param="query")
        docs = body.get("texts" if tei else "documents")
        if not isinstance(docs, list) or not docs:
            raise BadRequest("'documents' must be a non-empty array", param="documents")
        texts: list[str] = []
        for i, d in enumerate(docs):
            if isinstance(d, dict):  # Cohere v1 / Jina accept {"text": ...}
                d = d.get("text")
            if not isinstance(d, str):
                raise BadRequest(f"'documents[{i}]' must be a string", param="documents")
            texts.append(d)
        if len(texts) > self.config.max_inputs:
            raise BadRequest(f"{len(texts)} documents; at most {self.config.max_inputs} are "
                             "allowed", param="documents")
        if not tei and (not isinstance(model, str) or not model):
            raise BadRequest("you must provide a model parameter", param="model")
        top_n = body.get("top_n")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)
                                  or top_n < 1):
            raise BadRequest("'top_n' must be a positive integer", param="top_n")
        tokens = count_tokens(query) * len(texts) + sum(count_tokens(t) for t in texts)
        return {"tei": tei, "query": query, "texts": texts, "top_n": top_n, "model": model,
                "return_documents": bool(body.get("return_documents")), "tokens": tokens}

    def _rerank_body(self, rr: dict[str, Any]) -> bytes:
        """Scores from :func:`sim_rerank_scores`, best first (ties by index); Cohere/Jina shape
        ``{"results": [{"index", "relevance_score"}], ...}`` or TEI's ``[{"index", "score"}]``."""
        scores = sim_rerank_scores(rr["query"], rr["texts"])
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if rr["top_n"] is not None:
            order = order[: rr["top_n"]]
        if rr["tei"]:
            return orjson.dumps([{"index": i, "score": scores[i]} for i in order])
        results: list[dict[str, Any]] = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if rr["return_documents"]:
                item["document"] = {"text": rr["texts"][i]}
            results.append(item)
        return orjson.dumps({"id": f"rerank_{self._n_requests}", "model": rr["model"],
                             "results": results,
                             "usage": {"total_tokens": rr["tokens"]},
                             "meta": {"billed_units": {"search_units": 1}}})

    def _embedding_body(self, emb: dict[str, Any]) -> bytes:
        frags = embedding_fragments(emb["model"], emb["texts"], emb["dim"], emb["fmt"])
        parts = [b'{"object":"list","data":[']
        for i, f in enumerate(frags):
            if i:
                parts.append(b",")
            parts.append(b'{"object":"embedding","index":%d,"embedding":' % i)
            parts.append(f)
            parts.append(b"}")
        parts.append(b'],"model":')
        parts.append(orjson.dumps(emb["model"]))
        parts.append(
            b',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (emb["tokens"], emb["tokens"])
        )
        return b"".join(parts)

    def _next_call_id(self, prefix: str) -> str:
        self._n_calls += 1
        return f"{prefix}_{self._n_calls}"

    _OPENAI_FINISH: ClassVar[dict[str, str]] = {
        "end": "stop",
        "length": "length",
        "stop_sequence": "stop",
        "tool": "tool_calls",
    }
    _ANTHROPIC_STOP: ClassVar[dict[str, str]] = {
        "end": "end_turn",
        "length": "max_tokens",
        "stop_sequence": "stop_sequence",
        "tool": "tool_use",
    }

    def _openai_completion(self, plan: ChatPlan, rid: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if plan.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self._next_call_id("call"),
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
                for name, args in plan.tool_calls
            ]
        else:
            message["content"] = plan.text
        ct = plan.completion_tokens
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._OPENAI_FINISH[plan.finish],
                }
            ],
            "usage": {
                "prompt_tokens": plan.prompt_tokens,
                "completion_tokens": ct,
                "total_tokens": plan.prompt_tokens + ct,
            },
        }

    def _anthropic_message(self, plan: ChatPlan, rid: str) -> dict[str, Any]:
        content: list[dict[str, Any]]
        if plan.tool_calls:
            content = [
                {"type": "tool_use", "id": self._next_call_id("toolu"), "name": name, "input": args}
                for name, args in plan.tool_calls
            ]
        else:
            content = [{"type": "text", "text": plan.text}]
        return {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": content,
            "stop_reason": self._ANTHROPIC_STOP[plan.finish],
            "stop_sequence": plan.stop_sequence if plan.finish == "stop_sequence" else None,
            "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens},
        }

    async def _send_events(
        self,
        request: web.Request,
        events: list[bytes],
        rec: dict[str, Any],
        headers: dict[str, str],
        fault: str | None,
        n_tokens: int,
    ) -> web.StreamResponse:
        """Write SSE ``events`` with ``stream_token_s`` (+ per-token time) between them.

        The last event is the terminator ([DONE] / message_stop); a truncate fault cuts the
        stream after half the events."""
        cfg = self.config
        resp = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
        rec["status"] = 200
        cut = max(1, (len(events) - 1) // 2) if fault == "truncate" else len(events)
        gap = cfg.stream_token_s + (cfg.per_token_s * n_tokens / max(1, len(events) - 2))
        try:
            await resp.prepare(request)
            for i, ev in enumerate(events[:cut]):
                if i and gap > 0:
                    await asyncio.sleep(gap)
                await resp.write(ev)
        except ConnectionError:
            self._disconnected(rec)
            return resp
        if fault == "truncate":
            _abort(request)
        return resp

    async def _stream_openai(
        self,
        request: web.Request,
        plan: ChatPlan,
        rec: dict[str, Any],
        headers: dict[str, str],
        fault: str | None,
    ) -> web.StreamResponse:
        created = int(time.time())
        cid = f"chatcmpl-{rec['request_id']}"
        usage_null = plan.include_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": plan.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if usage_null:
                obj["usage"] = None
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        events: list[bytes] = []
        if plan.tool_calls:
            events.append(chunk({"role": "assistant", "content": None}))
            for i, (name, args) in enumerate(plan.tool_calls):
                events.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": self._next_call_id("call"),
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for frag in split_fragments(orjson.dumps(args).decode()):
                    events.append(
                        chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
                    )
        else:
            events.append(chunk({"role": "assistant", "content": ""}))
            for piece in split_stream(plan.text):
                events.append(chunk({"content": piece}))
        events.append(chunk({}, self._OPENAI_FINISH[plan.finish]))
        if plan.include_usage:
            ct = plan.completion_tokens
            usage = {
                "prompt_tokens": plan.prompt_tokens,
                "completion_tokens": ct,
                "total_tokens": plan.prompt_tokens + ct,
            }
            events.append(
                b"data: "
                + orjson.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": plan.model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": usage,
                    }
                )
                + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        return await self._send_events(request, events, rec, headers, fault, plan.completion_tokens)

    async def _stream_anthropic(
        self,
        request: web.Request,
        plan: ChatPlan,
        rec: dict[str, Any],
        headers: dict[str, str],
        fault: str | None,
    ) -> web.StreamResponse:
        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        message: dict[str, Any] = {
            "id": f"msg_{rec['request_id']}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": 1},
        }
        events = [
            event("message_start", {"type": "message_start", "message": message}),
            event("ping", {"type": "ping"}),
        ]
        if plan.tool_calls:
            for i, (name, args) in enumerate(plan.tool_calls):
                events.append(
                    event(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": i,
                            "content_block": {
                                "type": "tool_use",
                                "id": self._next_call_id("toolu"),
                                "name": name,
                                "input": {},
                            },
                        },
                    )
                )
                for frag in split_fragments(orjson.dumps(args).decode()):
                    events.append(
                        event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": i,
                                "delta": {"type": "input_json_delta", "partial_json": frag},
                            },
                        )
                    )
                events.append(
                    event("content_block_stop", {"type": "content_block_stop", "index": i})
                )
        else:
            events.append(
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in split_stream(plan.text):
                events.append(
                    event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
            events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._ANTHROPIC_STOP[plan.finish],
                        "stop_sequence": plan.stop_sequence
                        if plan.finish == "stop_sequence"
                        else None,
                    },
                    "usage": {"output_tokens": plan.completion_tokens},
                },
            )
        )
        events.append(event("message_stop", {"type": "message_stop"}))
        return await self._send_events(request, events, rec, headers, fault, plan.completion_tokens)


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON)


def _abort(request: web.Request, *, rst: bool = False) -> None:
    """Drop the connection without (finishing) a response; ``rst`` sends a TCP reset."""
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def check_host(host: str) -> str:
    """Only loopback addresses are allowed: the sim never listens on a real interface."""
    if host not in _LOOPBACK and not host.startswith("127."):
        raise ConfigError(f"the sim only binds to loopback addresses, not {host!r}")
    return host


async def start_site(
    sim: SimApp, host: str, port: int, *, shutdown_timeout: float = 1.0
) -> tuple[web.AppRunner, int]:
    """Start serving ``sim`` on host:port (0 = a free port); returns the runner and the port."""
    check_host(host)
    runner = web.AppRunner(
        sim.make_app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    bound = server.sockets[0].getsockname()[1]
    return runner, int(bound)


class SimServer:
    """The sim served from this process, on its own event loop in its own daemon thread.

    ``with SimServer(SimConfig(latency=0.01)) as srv: ... srv.url ...``
    """

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = SimApp(config)
        self.host = check_host(host)
        self._port_req = port
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def config(self) -> SimConfig:
        return self.app.config

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise ConfigError("the SimServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` — the OpenAI-style base URL."""
        return self.base + "/v1"

    def start(self) -> SimServer:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="parallelrag-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise ConfigError("the SimServer did not start within 30 s")
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            raise ConfigError(f"the SimServer could not start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner, self.port = loop.run_until_complete(
                start_site(self.app, self.host, self._port_req)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise ConfigError("the SimServer is not started")
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(30)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the server's counters (see the package docs)."""
        return self._call(self.app.snapshot)

    def reset_stats(self) -> None:
        """Zero every counter (``max_in_flight`` included) and clear the log."""
        self._call(self.app.reset_stats)

    def update(self, **changes: Any) -> SimConfig:
        """Change SimConfig fields live; returns the new config."""
        return self._call(lambda: self.app.update(**changes))

    @property
    def log(self) -> list[dict[str, Any]]:
        """One dict per request (the last 100k)."""
        return self._call(lambda: [dict(r) for r in self.app.log])

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if runner is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            with contextlib.suppress(Exception):
                fut.result(15)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base if self.port is not None else "not started"
        return f"SimServer({where})"


class SimProcess:
    """The sim in a subprocess (``python -m parallelrag.sim serve --port 0 ...``).

    Same surface as :class:`SimServer`; ``stats()``/``update()``/``log``/``reset_stats()`` go
    over HTTP to the ``/sim/*`` control endpoints.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        python: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.config = config or SimConfig()
        self.host = check_host(host)
        self._port_req = port
        self.port: int | None = None
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def base(self) -> str:
        if self.port is None:
            raise ConfigError("the SimProcess is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def command(self) -> list[str]:
        cfg = orjson.dumps(self.config.to_dict()).decode()
        return [
            self.python,
            "-m",
            "parallelrag.sim",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self._port_req),
            "--config-json",
            cfg,
        ]

    def start(self) -> SimProcess:
        if self._proc is not None:
            return self
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self._proc = proc
        assert proc.stdout is not None
        line = b""
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                ch = os.read(proc.stdout.fileno(), 1)
                if not ch:
                    break
                line += ch
        text = line.decode(errors="replace").strip()
        prefix = "listening on "
        if not text.startswith(prefix):
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            self.stop()
            raise ConfigError(f"the sim subprocess did not start: {text!r} {err}")
        self.port = int(text[len(prefix) :].rsplit(":", 1)[1].split("/")[0])
        return self

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": _JSON}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return orjson.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/sim/stats")
        return result

    def reset_stats(self) -> None:
        self._request("POST", "/sim/reset", {})

    def update(self, **changes: Any) -> SimConfig:
        try:
            new = self._request("POST", "/sim/config", changes)
        except urllib.error.HTTPError as exc:
            raise ConfigError(f"the sim rejected the config change: {exc.read()!r}") from exc
        self.config = SimConfig(**new)
        return self.config

    @property
    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/sim/log")
        return result

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base if self.port is not None else "not started"
        return f"SimProcess({where})"
