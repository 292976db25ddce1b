"""Clip frame sampling (pipeline.data.clips): strides, bounds, clamping, determinism."""

from __future__ import annotations

import pytest
import torch

from pipeline.data.clips import clip_span, random_clip_indices, uniform_clip_indices


def test_random_clip_is_strided_inside_the_video_and_reaches_both_ends():
    generator = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(300):
        indices = random_clip_indices(20, clip_len=4, stride=3, generator=generator)
        assert [b - a for a, b in zip(indices, indices[1:])] == [3, 3, 3]
        assert indices[0] >= 0 and indices[-1] <= 19
        starts.add(indices[0])
    assert starts == set(range(20 - clip_span(4, 3) + 1))


def test_random_clip_depends_only_on_the_generator_state():
    draw = [random_clip_indices(50, 8, 2, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draw[0] == draw[1]


def test_short_videos_repeat_their_last_frame():
    generator = torch.Generator().manual_seed(0)
    assert random_clip_indices(3, clip_len=4, stride=2, generator=generator) == [0, 2, 2, 2]
    assert uniform_clip_indices(1, clip_len=3, stride=1, num_clips=2) == [[0, 0, 0], [0, 0, 0]]


def test_uniform_clips_spread_from_first_to_last_start():
    assert uniform_clip_indices(21, clip_len=4, stride=2, num_clips=3) == [
        [0, 2, 4, 6],
        [7, 9, 11, 13],
        [14, 16, 18, 20],
    ]
    assert uniform_clip_indices(21, clip_len=4, stride=2, num_clips=1) == [[7, 9, 11, 13]]


@pytest.mark.parametrize(
    "call",
    [
        lambda: random_clip_indices(0, 4, 1, torch.Generator()),
        lambda: uniform_clip_indices(10, 4, 0, 1),
        lambda: uniform_clip_indices(10, 4, 1, 0),
    ],
)
def test_bad_arguments_are_rejected(call):
    with pytest.raises(ValueError):
        call()
