"""Ranks stop at the step they agreed on, never on a flag that changed while they voted.

Found in a Slurm cancel: a SIGTERM landing on rank 0 during the vote (an all-reduce)
set its flag after it had voted "go on"; rank 0 then stopped alone while rank 1
trained on into its next collective, and both hung until killed, with no checkpoint.
The vote here is the real `distributed.agree` of a one-process run, wrapped so the
signal lands inside it, as it did.
"""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from flextrain.train import callbacks, distributed
from flextrain.train.callbacks import StoreProgressCallback
from flextrain.train.stop import StopRequest


def _step(callback: StoreProgressCallback, step: int) -> TrainerControl:
    control = TrainerControl()
    state = TrainerState(global_step=step, max_steps=100)
    callback.on_step_end(TrainingArguments(output_dir="/tmp/unused", report_to=[]), state, control)
    return control


def test_a_stop_asked_during_the_vote_waits_for_the_next_vote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = StopRequest()
    callback = StoreProgressCallback(None, "job", stop=stop, reporter=False)  # type: ignore[arg-type]
    real_agree = distributed.agree
    signals = iter([True, False])  # the first vote is interrupted by a SIGTERM

    def vote_interrupted(flag: bool) -> bool:
        answer = real_agree(flag)
        if next(signals, False):
            stop.set("SIGTERM")  # the handler runs while the collective is in flight
        return answer

    monkeypatch.setattr(callbacks.distributed, "agree", vote_interrupted)
    first = _step(callback, 5)
    assert not first.should_training_stop, "stopped on a flag the other ranks never saw"
    assert not first.should_save
    second = _step(callback, 6)
    assert second.should_training_stop
    assert second.should_save
    assert callback.stopped_by_request
