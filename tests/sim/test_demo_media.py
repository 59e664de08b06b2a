"""The demo's pictures: valid PNGs, one per clip, cleaner for better clips."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from sim.demo_media import (
    HEIGHT,
    SHAPES,
    WIDTH,
    describe_group,
    draw_clip,
    picture_clips,
    quality_percentiles,
    write_demo_media,
)


def _roughness(image: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours: noise and blockiness raise it."""
    return float(np.abs(np.diff(image, axis=1)).mean())


def test_percentiles_follow_quality_order() -> None:
    quality = np.array([0.3, -2.0, 1.5, 0.0])
    percentiles = quality_percentiles(quality)
    assert np.all((percentiles > 0) & (percentiles < 1))
    assert np.array_equal(np.argsort(percentiles), np.argsort(quality))
    assert np.allclose(quality_percentiles(np.ones(3)), 0.5)


@pytest.mark.parametrize("group", range(len(SHAPES)))
def test_better_clips_look_cleaner(group: int) -> None:
    roughness = [_roughness(draw_clip(p, group, variant=7)) for p in (0.05, 0.5, 0.95)]
    assert roughness[0] > roughness[1] > roughness[2]


def test_drawing_is_deterministic_and_bounded() -> None:
    first, second = draw_clip(0.3, 2, 5), draw_clip(0.3, 2, 5)
    assert first.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    with pytest.raises(ValueError):
        draw_clip(1.5, 0, 0)


def test_write_demo_media_writes_one_png_per_clip(tmp_path) -> None:
    names = write_demo_media(np.array([-1.0, 0.0, 1.0]), [0, 0, 1], tmp_path / "media")
    assert names == ["clip-000.png", "clip-001.png", "clip-002.png"]
    for name in names:
        image = imread(tmp_path / "media" / name)
        assert image.shape[:2] == (HEIGHT, WIDTH)
    named = write_demo_media([0.0, 1.0], ["prompt-b", "prompt-a"], tmp_path, names=["x", "y"])
    assert named == ["x.png", "y.png"]
    with pytest.raises(ValueError):
        write_demo_media(np.zeros(2), [0], tmp_path)


def test_prompts_are_described_distinctly() -> None:
    prompts = [describe_group(number) for number in range(36)]
    assert len(set(prompts)) == len(prompts)
    assert prompts[4] == "prompt 4: a blue ring"


def test_picture_clips_point_the_demo_at_its_pictures(tmp_path) -> None:
    clips = [
        {"external_id": f"clip-{i}", "uri": "x", "group": f"p{i % 2}", "scores": {"a": i}}
        for i in range(4)
    ]
    quality = {f"clip-{i}": float(i) for i in range(4)}
    pictured = picture_clips(clips, quality, tmp_path)
    assert [clip["uri"] for clip in pictured] == [f"/media/clip-{i}.png" for i in range(4)]
    assert all((tmp_path / f"clip-{i}.png").exists() for i in range(4))
    assert [clip["group"] for clip in pictured[:2]] == [describe_group(0), describe_group(1)]
    assert pictured[2]["group"] == pictured[0]["group"]
    assert pictured[3]["scores"] == {"a": 3}
