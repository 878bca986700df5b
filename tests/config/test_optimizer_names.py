"""Checking an optimizer name needs no torch: the list the validator keeps is torch's."""

from __future__ import annotations

import pytest

from flextrain.config.validation import TORCH_OPTIMIZERS


def test_the_list_is_torch_optims_own() -> None:
    torch_optim = pytest.importorskip("torch.optim")
    found = {
        name
        for name in dir(torch_optim)
        if isinstance(getattr(torch_optim, name), type)
        and issubclass(getattr(torch_optim, name), torch_optim.Optimizer)
        and name != "Optimizer"
    }
    assert found == TORCH_OPTIMIZERS
