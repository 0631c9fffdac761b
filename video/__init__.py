"""Video ingest for amg-reid: decode a camera's recording, detect and track the people in it, and hand each track
over as a :class:`Sighting` with its best crops (docs/video.md).

Modules: decode (PyAV frames), mot (MOT Challenge files), detect (a background-subtraction person detector),
track (ByteTrack from ``trackers``), appearance (ids given back by look after people cross), quality (crop
quality), sightings (the pipeline), synthetic (multi-camera videos with ground truth), evaluate (detection,
tracking and identity scores), identities (linking sightings across cameras). Needs the ``video`` extra
(``pip install -e .[video]``).
"""
from .errors import VideoError
from .mot import read_mot, write_mot
from .sightings import Crop, Sighting, sightings_from_video

__all__ = ['Crop', 'Sighting', 'sightings_from_video', 'VideoError', 'read_mot', 'write_mot']
