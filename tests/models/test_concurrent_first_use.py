"""The first model inspection from several threads at once (the API's thread pool).

transformers resolves its names lazily and not thread-safely; without the import
lock, two requests at once failed with "cannot import name 'AutoConfig'". Runs
in a fresh interpreter, where transformers is not imported yet.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flextrain.models.builtin import TINY_LLAMA_ID
from flextrain.models.resolve import ModelResolver


def test_first_inspections_in_parallel_threads_all_succeed(models_cache: Path) -> None:
    path = ModelResolver(models_cache).resolve(TINY_LLAMA_ID).path
    code = textwrap.dedent(
        f"""
        import sys, threading
        assert "transformers" not in sys.modules
        from flextrain.models.inspect import inspect_model
        results, errors = [], []
        def work(objective):
            try:
                results.append(inspect_model({str(path)!r}, objective=objective).num_parameters)
            except Exception as exc:
                errors.append(repr(exc))
        objectives = ["causal_lm", "sequence_classification"] * 4
        threads = [threading.Thread(target=work, args=(o,)) for o in objectives]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        assert len(results) == 8 and all(n > 0 for n in results), results
        print("OK")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "OK"
