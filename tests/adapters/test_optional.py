"""The adapters are optional: the core imports without LangChain or LlamaIndex, and using an
adapter whose framework is missing is a ConfigError that names the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent("""
    import sys
    {block}
    import parallelrag, parallelrag.adapters, parallelrag.embeddings, parallelrag.llm
    import parallelrag.pipeline
    from parallelrag import ConfigError, EmbeddingClient, LlmClient
    loaded = sorted(m for m in ("langchain_core", "llama_index") if sys.modules.get(m))
    print("loaded", loaded)
    emb = EmbeddingClient.openai("m", base_url="http://127.0.0.1:9/v1", api_key="sk-x-123456789")
    llm = LlmClient.openai("m", base_url="http://127.0.0.1:9/v1", api_key="sk-x-123456789")
    for call in (emb.as_langchain, emb.as_llamaindex, llm.as_langchain, llm.as_llamaindex):
        try:
            call()
            print("built", type(call()).__mro__[1].__name__)
        except ConfigError as exc:
            print("error", exc)
""")


def _run(block: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(block=block)], capture_output=True,
                         text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_core_imports_without_the_frameworks_and_says_which_extra() -> None:
    lines = _run("sys.modules.update({'langchain_core': None, 'llama_index': None, "
                 "'llama_index.core': None})")
    assert lines[0] == "loaded []"
    errors = lines[1:]
    assert len(errors) == 4 and all(line.startswith("error ") for line in errors), errors
    assert "pip install 'parallelrag[langchain]'" in errors[0]
    assert "pip install 'parallelrag[llamaindex]'" in errors[1]
    assert "pip install 'parallelrag[langchain]'" in errors[2]
    assert "pip install 'parallelrag[llamaindex]'" in errors[3]


def test_frameworks_are_imported_only_when_an_adapter_is_used() -> None:
    lines = _run("")
    assert lines[0] == "loaded []"  # importing parallelrag loads neither framework
    assert lines[1:] == ["built Embeddings", "built BaseEmbedding", "built BaseChatModel",
                         "built FunctionCallingLLM"]
