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


def test_read_frame_seeks_to_the_key_frame_before(tmp_path):
    # a key frame every 10 frames: frames either side of each key frame come from a seek, not from decoding the start
    import av

    from video.decode import read_frame
    path = tmp_path / 'gop.mp4'
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        stream.codec_context.gop_size = 10
        rng = np.random.default_rng(0)
        for n in range(35):
            image = np.full((48, 64, 3), 7 * n, np.uint8)
            image[rng.integers(0, 48, 40), rng.integers(0, 64, 40)] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        keys = [n for n, packet in enumerate(p for p in container.demux(video=0) if p.size) if packet.is_keyframe]
    assert len(keys) >= 3, keys
    decoded = [f.image for f in frames(path, START_TIME)]
    assert len(decoded) == 35
    for index in sorted({k + d for k in keys for d in (-1, 0, 1, 4)} & set(range(35))):
        np.testing.assert_array_equal(read_frame(path, index), decoded[index], err_msg=f'frame {index}')
