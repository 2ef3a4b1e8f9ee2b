"""vLLM's offline engine (install the `vllm` extra on a GPU machine).

Batches of any size go to `LLM.generate` / `LLM.chat` in one call: vLLM schedules them itself.
The engine still hands over one batch at a time (`batch_size`, e.g. 512) so finished samples are
cached as the run goes and a killed run resumes.
"""

from __future__ import annotations

from typing import Any

from lema_hub.generation.backends.base import Backend
from lema_hub.models import resolve_model, resolve_prompt_style


class VLLMBackend(Backend):
    is_async = False

    def __init__(self, config) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ImportError(
                "The vllm backend needs vLLM on a GPU machine: pip install 'lema-hub[vllm]'."
            ) from None
        self.config = config
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(model=resolve_model(self.config.model), **(self.config.extra_body or {}))
        return self._llm

    def prompt_style(self, requested: str) -> str:
        return resolve_prompt_style(requested, self.config.model, "vllm", self.llm.get_tokenizer)

    def prompt_length(self, prompt) -> int:
        return len(str(prompt))

    def generate_batch(self, units: list) -> list[dict[str, Any]]:
        from vllm import SamplingParams as VSP

        params = [
            VSP(
                n=1,
                temperature=u.sampling.temperature,
                top_p=u.sampling.top_p,
                max_tokens=u.sampling.max_tokens,
                stop=u.sampling.stop,
                seed=u.sampling.sample_seed(u.sample_index),
            )
            for u in units
        ]
        if isinstance(units[0].prompt, str):
            outs = self.llm.generate([u.prompt for u in units], params, use_tqdm=False)
        else:
            outs = self.llm.chat([u.prompt for u in units], params, use_tqdm=False)
        results = []
        for o in outs:
            c = o.outputs[0]
            results.append(
                {
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": len(o.prompt_token_ids or []),
                    "completion_tokens": len(c.token_ids),
                }
            )
        return results

    def close(self) -> None:
        self._llm = None
