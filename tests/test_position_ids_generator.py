"""position_ids under a scheme that draws its ids needs a generator: without one it says so
(a ValueError naming the fix) instead of failing inside torch on ``None.device``."""

from __future__ import annotations

import pytest
import torch

from study.tasks.arithmetic_positions import position_ids


def test_randomized_ids_without_a_generator_say_so():
    significance = torch.tensor([[1, 0, -1, 1, 0, -1, 0, 1, 2]])
    with pytest.raises(ValueError, match="pass position_ids a generator"):
        position_ids(significance, 6, "randomized", max_position=32)
    drawn = position_ids(significance, 6, "randomized", max_position=32, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (1, 8)
