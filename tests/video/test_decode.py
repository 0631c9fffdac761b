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


def test_read_frame_is_the_frame_decoding_gives(short_videos):
    from video.decode import read_frame
    _, videos, start, _, _ = short_videos
    path = videos[1]
    decoded = [f.image for f in frames(path, start)]
    # the first, ones between key frames, the last: a seek lands on the key frame before and decodes up to it
    for index in (0, 1, len(decoded) // 3, len(decoded) // 2 + 1, len(decoded) - 1):
        np.testing.assert_array_equal(read_frame(path, index), decoded[index], err_msg=f'frame {index}')
    with pytest.raises(VideoError, match='no frame'):
        read_frame(path, len(decoded))
    with pytest.raises(VideoError, match='numbered from 0'):
        read_frame(path, -1)
