"""One generation engine, four backends: OpenAI-compatible endpoints, TGI, local transformers, vLLM.

```python
from lema_hub.generation import EngineConfig, GenerationRequest, SamplingParams, make_engine

engine = make_engine(EngineConfig(backend="transformers", model="embedded:smollm2-135m-instruct"),
                     cache_path="outputs/requests.jsonl")
results = engine.generate([GenerationRequest("q1", "What is 2 + 3?", SamplingParams(n=4, temperature=0.8))])
```
"""

from lema_hub.generation.cache import RequestCache, request_key
from lema_hub.generation.engine import Engine, make_engine
from lema_hub.generation.results import GenerationResults
from lema_hub.generation.types import (
    EndpointArgs,
    EngineConfig,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

__all__ = [
    "EndpointArgs",
    "Engine",
    "EngineConfig",
    "GenerationRequest",
    "GenerationResult",
    "GenerationResults",
    "RequestCache",
    "SamplingParams",
    "make_engine",
    "request_key",
]
