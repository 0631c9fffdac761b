import datetime as dt

import numpy as np
import pytest

from video import VideoError
from video.decode import frames, probe
from video.synthetic import START_TIME


@pytest.mark.parametrize('content', [b'', b'not a video at all' * 100])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / 'broken.mp4'
    path.write_bytes(content)
    with pytest.raises(VideoError, match='broken.mp4'):
        list(frames(path, START_TIME))


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match='cannot open video'):
        probe(tmp_path / 'absent.mp4')


def test_frames_stream_with_index_and_time(short_videos):
    _, videos, start, _, _ = short_videos
    info = probe(videos[1])
    assert (info.width, info.height, info.fps) == (384, 288, 10.0)
    seen = 0
    for frame in frames(videos[1], start.replace(tzinfo=None)):  # a naive start time is UTC
        assert frame.index == seen
        assert frame.time == start + dt.timedelta(seconds=seen / 10)
        assert frame.time.tzinfo == dt.timezone.utc
        assert frame.image.shape == (288, 384, 3) and frame.image.dtype == np.uint8
        seen += 1
    assert seen == 120
