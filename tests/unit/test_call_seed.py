"""backend.call_seed: one model call's seed, from model.seed and where the call stands."""

from __future__ import annotations

import itertools

from elpis_worker.backend import call_seed


def test_the_same_call_gets_the_same_seed_and_every_part_of_it_counts():
    base = call_seed(0, 7, 3, "think")
    assert base == call_seed(0, 7, 3, "think") and 0 <= base < 2**32
    others = [
        call_seed(1, 7, 3, "think"),
        call_seed(0, 8, 3, "think"),
        call_seed(0, 7, 4, "think"),
        call_seed(0, 7, 3, "replan"),
        call_seed(0, 7, 3, "think", attempt=1),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_seeds_of_a_batch_of_calls_do_not_collide():
    calls = itertools.product(range(40), range(12), ("think", "reflect"), range(2))
    seeds = [call_seed(0, task, turn, phase, attempt) for task, turn, phase, attempt in calls]
    assert len(set(seeds)) == len(seeds)
