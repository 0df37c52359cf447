"""``sim`` command group: ``python -m parallelrag.sim serve --port 0 --latency fixed:0.05 ...``.

``serve`` prints exactly one line, ``listening on http://127.0.0.1:PORT``, then serves until
SIGINT or SIGTERM. Every :class:`~parallelrag.sim.SimConfig` field has an option
(``--latency``, ``--rpm``, ``--tpm``, ``--max-in-flight``, ``--fault-500``, ...);
``--config-json`` gives several fields at once (options given explicitly win).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from parallelrag.errors import ConfigError
from parallelrag.sim.config import SimConfig
from parallelrag.sim.server import SimApp, start_site

__all__ = ["sim"]

_OPTIONS: list[tuple[str, Any, str]] = [
    (
        "latency",
        str,
        "latency per request: 'fixed:S', 'uniform:A,B', 'lognormal:MEDIAN,SIGMA' or S",
    ),
    ("per_token_s", float, "extra seconds per token"),
    ("stream_token_s", float, "seconds between streamed chunks"),
    ("rpm", float, "requests per minute limit"),
    ("tpm", float, "tokens per minute limit"),
    ("rate_window_s", float, "rate-limit bucket window in seconds (capacity = limit*window/60)"),
    ("max_in_flight", int, "requests served at once; more are answered --overload-status"),
    ("overload_status", click.Choice(["429", "503", "529"]), "status for overload"),
    ("fault_500", float, "probability of a 500"),
    ("fault_503", float, "probability of a 503"),
    ("fault_timeout", float, "probability of hanging --timeout-hang-s first"),
    ("timeout_hang_s", float, "seconds a timeout fault hangs"),
    ("fault_reset", float, "probability of a connection reset"),
    ("fault_malformed", float, "probability of an invalid JSON body"),
    ("fault_truncate", float, "probability of a truncated stream or body"),
    ("embedding_dim", int, "default embedding dimensions"),
    ("max_inputs", int, "max inputs per embeddings request"),
    ("max_input_tokens", int, "max tokens per embedding input"),
    ("max_request_tokens", int, "max tokens per embeddings request"),
    ("api_key", str, "require this API key"),
    ("seed", int, "seed of the latency/fault RNG"),
    ("reply_words", int, "words in default chat replies"),
]


def _config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for name, typ, help_text in reversed(_OPTIONS):
        f = click.option(
            "--" + name.replace("_", "-"), name, type=typ, default=None, help=help_text
        )(f)
    f = click.option(
        "--support-base64/--no-support-base64",
        "support_base64",
        default=None,
        help="accept encoding_format=base64",
    )(f)
    return f


def build_config(config_json: str | None, options: dict[str, Any]) -> SimConfig:
    """SimConfig from ``--config-json`` overlaid with explicitly given options."""
    fields: dict[str, Any] = {}
    if config_json:
        loaded = orjson.loads(config_json)
        if not isinstance(loaded, dict):
            raise ConfigError("--config-json must be a JSON object")
        fields.update(loaded)
    for name, value in options.items():
        if value is not None:
            fields[name] = int(value) if name == "overload_status" else value
    latency = fields.get("latency")
    if isinstance(latency, str):
        with contextlib.suppress(ValueError):
            fields["latency"] = float(latency)
    return SimConfig().replace(**fields)


async def _serve(config: SimConfig, host: str, port: int) -> None:
    app = SimApp(config)
    runner, bound = await start_site(app, host, port)
    click.echo(f"listening on http://{host}:{bound}", nl=True)
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.group("sim")
def sim() -> None:
    """The simulated OpenAI-/Anthropic-compatible server."""


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback address to bind")
@click.option("--port", default=0, type=int, show_default=True, help="port (0 = a free one)")
@click.option("--config-json", default=None, help="SimConfig fields as a JSON object")
@_config_options
def serve(host: str, port: int, config_json: str | None, **options: Any) -> None:
    """Serve the sim until SIGINT/SIGTERM; prints 'listening on http://HOST:PORT'."""
    try:
        config = build_config(config_json, options)
    except (ConfigError, ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        asyncio.run(_serve(config, host, port))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
