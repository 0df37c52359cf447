"""parallelrag.sim: a simulated OpenAI-/Anthropic-compatible HTTP server on 127.0.0.1.

Provider tests and benchmarks talk real HTTP to it. It answers deterministically, so a test
can compute what it should receive::

    import pytest
    from parallelrag.sim import SimConfig, SimServer, sim_embedding, sim_reply

    @pytest.fixture
    def sim():
        with SimServer(SimConfig(latency="fixed:0.001", seed=1)) as srv:
            yield srv            # srv.url == "http://127.0.0.1:PORT/v1", srv.base without /v1

    def test_something(sim):
        ...                      # point a client at sim.url
        assert sim.stats()["max_in_flight"] <= 8
        sim.update(rpm=60)       # change behaviour live; sim.reset_stats() zeroes counters

``SimServer`` runs its own event loop in a daemon thread (never the caller's loop), so it works
from sync and async tests alike. ``SimProcess`` runs the same server in a subprocess
(``python -m parallelrag.sim serve --port 0 ...``) with the same surface over HTTP.

Routes (matched by path suffix, so ``/v1/X``, ``/X`` and Azure's
``/openai/deployments/{deployment}/X?api-version=...`` all work; on Azure paths the model is the
deployment name):

* ``POST .../embeddings`` (OpenAI): vectors are :func:`sim_embedding` (float lists or base64
  little-endian float32); default dims 3072 for ``text-embedding-3-large`` else
  ``SimConfig.embedding_dim``; ``dimensions`` honoured.
* ``POST .../chat/completions`` (OpenAI, incl. ``stream``) and ``POST .../messages``
  (Anthropic, incl. ``stream``). Replies, in order of precedence:
  tool results after the last user message → ``"final: " + " | ".join(results)``;
  ``[[tool:NAME {json}]]`` directives with ``tools`` in the request → tool calls
  (ids ``call_<n>`` / ``toolu_<n>``); ``ECHO:`` prefix → the rest verbatim; with
  ``response_format`` json_schema/json_object: ``[[json {...}]]`` → that JSON,
  ``[[invalid_json]]`` → broken JSON, else a minimal instance of the schema;
  otherwise :func:`sim_reply`. ``max_tokens`` cuts the reply at ``4 * max_tokens`` UTF-8 bytes
  (finish ``length`` / ``max_tokens``); stop sequences cut it (``stop`` / ``stop_sequence``).
* ``POST .../rerank``: Cohere/Jina format (``{"model", "query", "documents", "top_n",
  "return_documents"}`` → ``{"results": [{"index", "relevance_score"}], ...}``) or TEI format
  (``{"query", "texts"}`` → ``[{"index", "score"}]``), best first; scores are
  :func:`sim_rerank_scores` (share of the query's words found in the document).
* ``GET .../models``; control: ``GET /sim/stats``, ``POST /sim/reset``, ``POST /sim/config``
  (JSON of SimConfig changes; ``GET`` returns the config), ``GET /sim/log?since=N``.

Tokens: :func:`count_tokens` (``max(1, ceil(utf8_bytes / 4))``) everywhere; chat prompt tokens
are the sum over message contents (plus system and tool arguments); TPM takes prompt tokens +
``max_tokens`` (default 256) for chat, the sum over inputs for embeddings.

Stats (``stats()``): ``requests``, ``by_endpoint``, ``in_flight``, ``max_in_flight`` (accepted
requests only), ``rate_limited``, ``overloaded``, ``faults`` (by kind), ``status_counts``
(string keys; ``"499"`` = client went away, ``"0"`` = reset fault), ``tokens``,
``embedding_inputs``, ``client_disconnects``, ``bad_requests``.
"""

from parallelrag.sim.config import LatencyModel, SimConfig, parse_latency
from parallelrag.sim.core import (
    count_tokens,
    minimal_instance,
    sim_embedding,
    sim_embeddings,
    sim_reply,
    sim_rerank_scores,
)
from parallelrag.sim.server import SimApp, SimProcess, SimServer, format_duration

__all__ = [
    "LatencyModel",
    "SimApp",
    "SimConfig",
    "SimProcess",
    "SimServer",
    "count_tokens",
    "format_duration",
    "minimal_instance",
    "parse_latency",
    "sim_embedding",
    "sim_embeddings",
    "sim_reply",
    "sim_rerank_scores",
]
