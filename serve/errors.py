"""Errors raised by the server-LLM deployment and its backends.

Bad input raises a ``ValueError`` subclass whose message names the problem; a missing
optional dependency raises ``BackendUnavailableError``; a failing external endpoint raises
``EndpointError``.
"""


class ServeConfigError(ValueError):
    """A ServeSettings field or a backend option is missing or invalid."""


class ModelLoadError(ValueError):
    """The model or tokenizer could not be loaded from the configured local path."""


class RequestError(ValueError):
    """A generate / top-k request is malformed (empty prompts, bad token ids, ...)."""


class AdapterError(ValueError):
    """A LoRA adapter replacement has the wrong names or shapes, or no LoRA is attached."""


class BackendUnavailableError(ImportError):
    """An optional backend cannot run here (its extra is not installed, or no GPU)."""


class EndpointError(RuntimeError):
    """An external OpenAI-compatible endpoint failed, timed out or answered nonsense."""


class TopKUnsupportedError(NotImplementedError):
    """The backend (or the external server behind it) cannot return top-k logits."""


class DeploymentStartError(RuntimeError):
    """A replica of the LLM deployment failed to start; the message carries its error."""
