"""What a backend provides to the engine."""

from __future__ import annotations

from typing import Any

from lema_hub.models import resolve_prompt_style


class Backend:
    """Async backends implement `agenerate` (one sample); batch backends implement `generate_batch`."""

    is_async = True

    def prompt_style(self, requested: str) -> str:
        """`plain` or `chat` for the configured style (the one rule: `models.resolve_prompt_style`)."""
        return resolve_prompt_style(requested, self.config.model, self.config.backend)

    async def astart(self) -> None:
        """Create clients inside the running event loop."""

    async def astop(self) -> None:
        """Close what `astart` created."""

    async def agenerate(self, unit) -> dict[str, Any]:
        raise NotImplementedError

    def prompt_length(self, prompt) -> int:
        return len(str(prompt))

    def generate_batch(self, units: list) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Free models and clients."""


def api_key(env_name: str | None) -> str | None:
    """The key from the environment (never logged, never stored)."""
    import os

    return os.environ.get(env_name) if env_name else None
