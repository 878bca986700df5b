"""What every `flextrain` command module shares: consoles, error handling, the service.

Every known error (bad config, unknown model or dataset, wrong job state, a
database that cannot be opened) is printed as a message naming the problem and
the fix, with exit code 2 for bad input and 1 otherwise; no traceback.

The service, the store and the error classes are imported when a command runs,
not when this module is: `flextrain --help` builds every command's options but
runs none of them, and should not pay for SQLAlchemy or the data layer.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from flextrain.hardware.detect import HardwareConstraints
    from flextrain.service import TrainingService

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def guard(fn: Callable[[], T]) -> T:
    """Run `fn`, turning known errors into a message and an exit code.

    flextrain's own errors (`FlextrainError`) say which exit code they get: 2 for bad
    input, 1 for something to wait for or fix outside the command (a locked database).
    """
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from flextrain.errors import FlextrainError

    try:
        return fn()
    except FlextrainError as exc:  # the message names the field and the fix
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except ValidationError as exc:
        from flextrain.config.errors import field_messages

        err_console.print("[red]Invalid configuration:")
        for field, message in field_messages(exc.errors()):
            err_console.print(f"  - {escape(field)}: {escape(message)}")
        raise typer.Exit(2) from None
    except ValueError as exc:  # bad input not (yet) told as a FlextrainError
        err_console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        err_console.print(
            f"The job database could not be used ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Fix: check FLEXTRAIN_DATABASE_URL and that "
            "the database server is running.",
            style="red",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1) from None


def get_service() -> TrainingService:
    """The service, or a one-line error when its database cannot be opened."""
    from flextrain.service import TrainingService

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return guard(TrainingService)


def end_without_teardown(exc: SystemExit) -> None:
    """End this process now, with `exc`'s exit status, when a command loaded torch.

    Unloading torch and transformers at interpreter exit takes 1 to 1.7 s on a 2-core
    CPU (tearing down some 380,000 objects), after the command's work is done: a first
    `train` of a model, `check`, `try` or `evaluate` paid it on every run. The exit
    handlers still run and the output is flushed; only the module teardown is skipped.
    A process with other threads still running (not daemons) exits the usual way.
    """
    if "torch" not in sys.modules:
        return  # the usual teardown is quick
    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # what the interpreter would print for a non-integer exit code
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a closed pipe
            stream.flush()
    os._exit(status)


def print_hardware(hw: HardwareConstraints) -> None:
    """The machine as training will see it (cores left after reserved_cpus)."""
    table = Table(title="Hardware", show_header=False)
    table.add_row("Platform", hw.platform)
    table.add_row("CPU cores", str(hw.cpu_cores))
    table.add_row(
        "Memory available", f"{hw.available_memory_gb:.1f} of {hw.total_memory_gb:.1f} GB"
    )
    table.add_row("GPUs", ", ".join(hw.gpu_names) or "none")
    table.add_row("GPU memory free", f"{hw.available_gpu_memory_gb:.1f} GB")
    table.add_row("Mixed precision", "yes" if hw.supports_mixed_precision else "no")
    table.add_row("Recommended precision", hw.recommended_precision)
    table.add_row("Disk free", f"{hw.disk_free_gb:.1f} GB")
    console.print(table)
