"""The client side of the server-LLM deployment: a Serve handle behind fedsim's LLMClient interface."""
from __future__ import annotations

from typing import Any


class ServeLLMClient:
    """Calls the deployment through its handle; one call carries all of a client's prompts."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        return self.handle.generate.remote(list(prompts), dict(params)).result()
