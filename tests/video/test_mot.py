import numpy as np
import pytest

from video import VideoError, read_mot, write_mot


def test_round_trip(tmp_path):
    boxes = {1: np.array([[3, 10.5, 20, 30, 60, 0.9]]), 4: np.array([[3, 12, 21, 30, 61, 1], [7, 100, 5, 25, 50, 0.5]])}
    write_mot(tmp_path / 'det.txt', boxes)
    back = read_mot(tmp_path / 'det.txt')
    assert list(back) == [1, 4]
    for frame in boxes:
        np.testing.assert_allclose(back[frame], boxes[frame])


def test_text_with_six_columns_gets_confidence_one_and_skips_comments():
    text = '# frame,id,x,y,w,h\n2,-1,1,2,3,4\n\n1,5,1,2,3,4,0.3,1,1\n'
    boxes = read_mot(text)
    assert list(boxes) == [1, 2]  # in frame order, whatever the file's
    np.testing.assert_allclose(boxes[2], [[-1, 1, 2, 3, 4, 1.0]])
    np.testing.assert_allclose(boxes[1], [[5, 1, 2, 3, 4, 0.3]])  # columns past conf dropped


@pytest.mark.parametrize('bad, why', [
    ('1,1,2,3,4', 'expected frame,id,x,y,w,h'),
    ('1,1,2,three,4,5', 'not a number'),
    ('1,1,2,nan,4,5', 'not a finite number'),
    ('0,1,2,3,4,5', '1-based'),
    ('1.5,1,2,3,4,5', 'whole number'),
    ('1,1,2,3,0,5', 'width and height must be positive'),
    ('1,1,2,3,4,-5', 'width and height must be positive'),
])
def test_bad_line_is_named(bad, why):
    with pytest.raises(VideoError, match=f'line 2: .*{why}'):
        read_mot(f'1,1,10,10,5,5,1\n{bad}\n')


def test_nothing_to_read():
    with pytest.raises(VideoError, match='no boxes'):
        read_mot('# only a comment\n')


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match='cannot read MOT file'):
        read_mot(tmp_path / 'absent.txt')
