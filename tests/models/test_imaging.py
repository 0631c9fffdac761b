"""One decoder for every path: a photo gets the same vector from `amg-reid evaluate` and from the service."""
import io

import numpy as np
import pytest
from PIL import Image

from app.imaging import decode_upload
from models.embedder import Embedder
from models.imaging import ImageError, open_image, to_rgb
from reid.datasets import ImageRecord
from reid.engine import extract_features
from tests.conftest import tiny_model


def _rotated_jpeg(path) -> bytes:
    """A 32x64 (W x H as stored) JPEG whose EXIF says: rotate 90 degrees to view (orientation 6) -> 64x32 upright."""
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    pixels.save(buf, format='JPEG', exif=exif, quality=95)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_evaluate_and_service_give_the_same_vector_for_an_exif_rotated_photo(tmp_path):
    data = _rotated_jpeg(tmp_path / 'rotated.jpg')
    upright = open_image(tmp_path / 'rotated.jpg')
    assert upright.size == (32, 64)  # width 32, height 64: the EXIF rotation was applied
    model = tiny_model()
    evaluate_feature, _, _ = extract_features(model, [ImageRecord(str(tmp_path / 'rotated.jpg'), 1, 1)],
                                              progress=False)
    service_image = decode_upload(data, 'rotated.jpg', max_bytes=10 ** 7, max_pixels=10 ** 7).image
    service_vector = Embedder(model)([service_image])
    np.testing.assert_array_equal(evaluate_feature, service_vector)
    ignoring_exif = Embedder(model)([Image.open(io.BytesIO(data)).convert('RGB')])
    assert np.abs(ignoring_exif - service_vector).max() > 1e-3  # the rotation matters to the model


@pytest.mark.parametrize('mode', ['CMYK', 'P', 'RGBA', 'I;16', 'L'])
def test_every_mode_decodes_to_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 8, 3), dtype=np.uint8))
    if mode == 'I;16':
        im = Image.fromarray(np.asarray(rgb.convert('L'), dtype=np.uint16) * 257).convert('I;16')
        expected = np.asarray(rgb.convert('L').convert('RGB'))
    else:
        im = rgb.convert(mode)
        expected = None
    path = tmp_path / f'x.{"tif" if mode in ("CMYK", "I;16") else "png"}'
    im.save(path)
    out = open_image(path)
    assert out.mode == 'RGB' and out.size == (8, 16)
    if expected is not None:
        np.testing.assert_allclose(np.asarray(out, dtype=int), expected, atol=1)
    assert to_rgb(Image.open(path)).tobytes() == out.tobytes()


def test_a_broken_file_names_itself(tmp_path):
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    with pytest.raises(ImageError, match='bad.jpg'):
        open_image(tmp_path / 'bad.jpg')
    with pytest.raises(ImageError, match='not found'):
        open_image(tmp_path / 'missing.jpg')
