"""A seconds-long synthetic two-camera video with ground truth, made once per session."""
import pytest

for module in ('av', 'cv2', 'trackers', 'motmetrics', 'sklearn'):
    pytest.importorskip(module, reason='video tests skipped: the video extra is not installed (pip install -e .[video])')

from video.synthetic import VideoSynthConfig, generate_videos, load_walks  # noqa: E402

SHORT = VideoSynthConfig(num_people=6, num_cams=2, seconds=12, size=(384, 288), crossing_seconds=(3.0, 5.0),
                         travel_seconds=(1.0, 2.0), seed=3)


@pytest.fixture(scope='session')
def short_videos(tmp_path_factory):
    """(root, {camera: video path}, start time, walks, {camera: ground truth}) of SHORT."""
    root = tmp_path_factory.mktemp('video-synth')
    videos = generate_videos(root, SHORT)
    start, walks, truth = load_walks(root)
    return root, videos, start, walks, truth
