"""Thread-safe first import of torch and transformers.

transformers resolves its public names lazily on first attribute access, and
that is not thread-safe: two API requests importing `AutoConfig` at once in
FastAPI's thread pool failed with "cannot import name 'AutoConfig' from
'transformers'". Every lazy import site outside the worker calls
`load_transformers()` first; the first caller does the work under a lock while
the others wait. The front ends still start without torch (it loads on the
first request that needs a model).
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_loaded = False
_NAMES = (
    "AutoConfig",
    "AutoTokenizer",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "PreTrainedTokenizerFast",
    "LlamaConfig",
    "LlamaForCausalLM",
    "BertConfig",
    "BertForMaskedLM",
)


def load_transformers() -> None:
    global _loaded
    if _loaded:
        return
    with _LOCK:
        if _loaded:
            return
        import torch  # noqa: F401
        import transformers

        from flextrain.models.quantize import quiet_bitsandbytes_kernel_fetch

        quiet_bitsandbytes_kernel_fetch()
        from transformers.models.auto import modeling_auto  # noqa: F401

        for name in _NAMES:
            getattr(transformers, name)
        _loaded = True
