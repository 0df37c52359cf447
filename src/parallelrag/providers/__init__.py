"""Provider wire protocols: OpenAI-compatible (incl. Azure), Anthropic, and local models."""
