"""A real recording end to end: Debian's opencv-doc ships one of pedestrians (vtest.avi, 768x576, 795 frames)."""
import datetime as dt
import time
from pathlib import Path

import pytest

from video import sightings_from_video

VTEST = Path('/usr/share/doc/opencv-doc/examples/data/vtest.avi')


@pytest.mark.slow
@pytest.mark.skipif(not VTEST.exists(), reason=f'{VTEST} is missing: apt-get install opencv-doc '
                                               '(docker/install-test-deps.sh does where it can)')
def test_vtest_through_the_pipeline():
    start = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc)
    done = []
    began = time.perf_counter()
    sightings = list(sightings_from_video(VTEST, 'vtest', start, progress=lambda d, t: done.append((d, t))))
    seconds = time.perf_counter() - began
    assert done[-1][0] == 795
    assert len(sightings) >= 10  # a dozen or so people walk through it
    for s in sightings:
        assert 1 <= len(s.crops) <= 8
        assert start <= s.first_time <= s.last_time <= start + dt.timedelta(seconds=795 / 10)
        assert all(2 * c.image.size[0] <= 3 * c.image.size[1] for c in s.crops)  # standing-person shaped
    assert seconds < 795 / 10, f'slower than real time: {795 / seconds:.1f} frames/s'
