"""Synthetic multi-camera video with ground truth: the Re-ID generator's figures (reid.synthetic) walking across
static camera scenes.

Each person follows a route through some of the cameras (a walk across each scene, a few seconds of travel between
them); half of them walk in pairs that cross each other on their first camera, so one hides the other for a while.
Each camera has its own background, light, blur and noise (reid.synthetic.sample_camera) and one static occluder in
the foreground (a parked car or a pillar) that people pass behind. People enter and leave at the frame's sides.

Written under ``root``: per camera ``cam{c}.mp4`` (H.264, or MPEG-4 Part 2 where libx264 is missing) and
``cam{c}.gt.txt``: MOT Challenge ground truth ``frame,walk_id,x,y,w,h,1,1,visibility`` (frames 1-based; boxes are
the drawn figure's pixels, clipped to the frame; visibility is the share of the figure's pixels left visible by the
occluder, nearer people and the frame border; rows with nothing visible are left out); and ``walks.json``: the
config, the recording start time and each walk's ``walk_id``, ``person_id`` (the global identity, the same across
cameras), camera and frames. A walk id is unique over all cameras.

Everything follows from the config's seed.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw

from reid.synthetic import draw_figure, sample_camera, sample_identity

from .mot import write_mot

__all__ = ['VideoSynthConfig', 'Walk', 'plan_walks', 'generate_videos', 'load_walks', 'START_TIME']

_logger = logging.getLogger(__name__)
START_TIME = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc)  # every camera's recording starts then


@dataclass(frozen=True)
class VideoSynthConfig:
    """What to draw.

    Args:
        num_people: identities; each walks past 1..num_cams cameras.
        num_cams: cameras (scenes).
        seconds: length of every camera's video.
        fps: frames per second.
        size: (width, height) of the frames.
        crossing_share: share of the people who walk in pairs crossing each other on their first camera.
        crossing_seconds: (min, max) time a walk takes to cross the frame.
        travel_seconds: (min, max) time between leaving one camera and entering the next.
        difficulty: passed to the identity and camera samplers (shared attributes, blur, noise, colour casts).
        seed: everything follows from it.
    """
    num_people: int = 12
    num_cams: int = 3
    seconds: float = 60.0
    fps: float = 10.0
    size: Tuple[int, int] = (768, 576)
    crossing_share: float = 0.5
    crossing_seconds: Tuple[float, float] = (6.0, 10.0)
    travel_seconds: Tuple[float, float] = (2.0, 8.0)
    difficulty: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class Walk:
    """One person crossing one camera's scene in a straight line, feet from (x0, y0) to (x1, y1) in pixels."""
    walk_id: int
    person_id: int
    camera: int
    first_frame: int  # 0-based, the first frame the walk is drawn in (it may start off-screen)
    frames: int
    x0: float
    x1: float
    y0: float
    y1: float
    view: str  # front, back, left or right, for the whole walk


@dataclass
class _Scene:
    background: np.ndarray  # (H, W, 3) uint8
    horizon: float  # y of the horizon: a figure's height grows with its feet's distance below it
    occluder: Tuple[int, int, int, int]  # x0, y0, x1, y1
    occluder_colour: Tuple[int, int, int]
    look: Dict = field(default_factory=dict)  # reid.synthetic.sample_camera


def _figure_height(horizon: float, foot_y: float) -> float:
    """Perspective of a level floor: a figure's height grows linearly with its feet's distance below the horizon."""
    return 0.6 * (foot_y - horizon) if foot_y > horizon else 0.0


def _scene(cfg: VideoSynthConfig, cam: int) -> _Scene:
    width, height = cfg.size
    look = sample_camera(cfg.seed, cam, cfg.difficulty)
    rng = np.random.default_rng([cfg.seed, 20, cam])
    horizon = height * float(rng.uniform(0.3, 0.42))
    img = Image.new('RGB', (width, height), look['wall'])
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, horizon, width, height], fill=look['floor'])
    for _ in range(look['clutter'] * 3):  # windows, doors, signs on the wall; tiles on the floor
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, horizon * 0.9))
        colour = tuple(int(v) for v in np.clip(np.array(look['wall']) + rng.integers(-50, 50, 3), 0, 255))
        draw.rectangle([x, y, x + rng.uniform(0.02, 0.12) * width, y + rng.uniform(0.05, 0.3) * horizon], fill=colour)
    for y in np.linspace(horizon, height, 7)[1:-1]:
        draw.line([(0, y), (width, y)], fill=tuple(int(c * 0.85) for c in look['floor']), width=1)
    # the occluder stands in the foreground, between the camera and every walk
    if rng.random() < 0.5:  # a parked car
        w, h = width * float(rng.uniform(0.18, 0.26)), height * float(rng.uniform(0.2, 0.28))
        x0 = float(rng.uniform(0.15, 0.85 - w / width)) * width
        box = (int(x0), int(height - h), int(x0 + w), height)
    else:  # a pillar, floor to ceiling
        w = width * float(rng.uniform(0.04, 0.07))
        x0 = float(rng.uniform(0.2, 0.75)) * width
        box = (int(x0), 0, int(x0 + w), height)
    colour = tuple(int(c) for c in rng.integers(20, 230, 3))
    return _Scene(np.asarray(img).copy(), horizon, box, colour, look)


def plan_walks(cfg: VideoSynthConfig) -> List[Walk]:
    """Every walk of every person, in the order they were planned (walk ids 1, 2, ...)."""
    width, height = cfg.size
    horizons = {c: height * float(np.random.default_rng([cfg.seed, 20, c]).uniform(0.3, 0.42))
                for c in range(1, cfg.num_cams + 1)}
    rng = np.random.default_rng([cfg.seed, 21])
    total = int(round(cfg.seconds * cfg.fps))
    walks: List[Walk] = []
    paired = int(cfg.num_people * cfg.crossing_share) // 2 * 2
    partner_plan: Dict[int, Tuple[int, int, float, float]] = {}  # person -> (camera, start, depth, direction)
    for person in range(1, cfg.num_people + 1):
        k = int(rng.integers(1, cfg.num_cams + 1))
        cams = [int(c) for c in rng.permutation(np.arange(1, cfg.num_cams + 1))[:k]]
        crossing = rng.uniform(*cfg.crossing_seconds, size=k) * cfg.fps
        travel = rng.uniform(*cfg.travel_seconds, size=k) * cfg.fps
        route = float(crossing.sum() + travel[:-1].sum())
        start = float(rng.uniform(0, max(1.0, total - 0.7 * route)))
        depth = float(rng.uniform(0.4, 0.95))  # 0 at the horizon, 1 at the frame's bottom
        direction = float(rng.choice([-1.0, 1.0]))
        if person <= paired and person % 2 == 0:  # the partner of person - 1: same camera and time, opposite way
            cams[0], start, partner_depth, direction = partner_plan[person - 1]
            depth = float(np.clip(partner_depth + rng.choice([-1, 1]) * rng.uniform(0.04, 0.12), 0.35, 1.0))
            direction = -direction
        partner_plan[person] = (cams[0], int(start), depth, direction)
        frame = start
        for i, cam in enumerate(cams):
            if i:
                depth = float(rng.uniform(0.4, 0.95))
                direction = float(rng.choice([-1.0, 1.0]))
            horizon = horizons[cam]
            y0 = horizon + depth * (height - horizon)
            y1 = float(np.clip(y0 + rng.uniform(-0.08, 0.08) * (height - horizon), horizon + 0.3 * (height - horizon),
                               height))
            margin = 0.2 * _figure_height(horizon, max(y0, y1))  # start and end just off-screen
            xs = (-margin, width + margin)
            x0, x1 = xs if direction > 0 else xs[::-1]
            view = ('right' if direction > 0 else 'left') if rng.random() < 0.6 else str(rng.choice(['front', 'back']))
            first, n = int(round(frame)), int(round(crossing[i]))
            if first + n > 0 and first < total:
                walks.append(Walk(len(walks) + 1, person, cam, first, n, x0, x1, y0, y1, view))
            frame += crossing[i] + travel[i]
    return walks


def _render(scene: _Scene, frame: int, walks: List[Walk], idents: Dict[int, Dict], noise: np.ndarray,
            ) -> Tuple[np.ndarray, np.ndarray]:
    """One frame (H, W, 3) uint8 and its ground truth (N, 7) of (walk_id, x, y, w, h, 1, visibility)."""
    height, width = scene.background.shape[:2]
    img = scene.background.copy()
    owner = np.zeros((height, width), np.int32)  # which walk each pixel shows (0: background, -1: occluder)
    placed = []
    active = [w for w in walks if w.first_frame <= frame < w.first_frame + w.frames]
    for walk in sorted(active, key=lambda w: w.y0 + (w.y1 - w.y0) * (frame - w.first_frame) / w.frames):
        t = (frame - walk.first_frame) / max(1, walk.frames - 1)
        cx, foot = walk.x0 + (walk.x1 - walk.x0) * t, walk.y0 + (walk.y1 - walk.y0) * t
        fh = _figure_height(scene.horizon, foot)
        pad = int(fh * 0.5) + 2
        ox, oy = int(cx) - pad, int(foot - fh) - 4
        layer = Image.new('RGBA', (2 * pad, int(fh) + 8), (0, 0, 0, 0))
        phase = abs(cx - walk.x0) / (0.3 * fh) * np.pi
        draw_figure(ImageDraw.Draw(layer), idents[walk.person_id], walk.view, phase, cx - ox, foot - fh - oy, fh)
        rgba = np.asarray(layer)
        mask = rgba[..., 3] > 0
        # clip the layer to the frame
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(width, ox + rgba.shape[1]), min(height, oy + rgba.shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        sub = mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        img[y0:y1, x0:x1][sub] = rgba[y0 - oy:y1 - oy, x0 - ox:x1 - ox, :3][sub]
        owner[y0:y1, x0:x1][sub] = walk.walk_id
        placed.append((walk.walk_id, int(mask.sum()), x0, y0, sub))
    ox0, oy0, ox1, oy1 = scene.occluder
    img[oy0:oy1, ox0:ox1] = scene.occluder_colour
    owner[oy0:oy1, ox0:ox1] = -1
    truth = []
    for walk_id, area, x0, y0, sub in placed:
        rows, cols = np.nonzero(sub)
        if not len(rows):
            continue
        visible = float((owner[y0:y0 + sub.shape[0], x0:x0 + sub.shape[1]][sub] == walk_id).sum()) / area
        if visible <= 0:
            continue
        bx0, by0 = x0 + cols.min(), y0 + rows.min()
        truth.append((walk_id, bx0, by0, x0 + cols.max() + 1 - bx0, y0 + rows.max() + 1 - by0, 1, round(visible, 3)))
    look = scene.look
    if look['blur'] > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), look['blur'])
    light = look['gain'] * np.asarray(look['cast'], dtype=np.float32)
    out = np.clip(img * light + noise, 0, 255).astype(np.uint8)
    return out, np.asarray(truth, dtype=np.float64).reshape(-1, 7)


def _writer(path: Path, cfg: VideoSynthConfig):
    container = av.open(str(path), 'w')
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    stream = container.add_stream(codec, rate=int(round(cfg.fps)))
    stream.width, stream.height = cfg.size
    stream.pix_fmt = 'yuv420p'
    if codec == 'libx264':
        stream.options = {'crf': '23', 'preset': 'veryfast'}
    return container, stream


def generate_videos(root: Path, cfg: VideoSynthConfig = VideoSynthConfig()) -> Dict[int, Path]:
    """Draw and encode every camera's video and its ground truth under ``root``; {camera: video path}."""
    width, height = cfg.size
    if width % 2 or height % 2:
        raise ValueError('width and height must be even (yuv420p)')
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    walks = plan_walks(cfg)
    idents = {p: sample_identity(cfg.seed, p, cfg.difficulty) for p in {w.person_id for w in walks}}
    total = int(round(cfg.seconds * cfg.fps))
    videos = {}
    for cam in range(1, cfg.num_cams + 1):
        scene = _scene(cfg, cam)
        cam_walks = [w for w in walks if w.camera == cam]
        # a few noise frames drawn once and cycled: the camera's sensor noise, at a fraction of the cost
        noise_rng = np.random.default_rng([cfg.seed, 22, cam])
        noise = noise_rng.normal(0, scene.look['noise'], (4, height, width, 3)).astype(np.float32)
        path = root / f'cam{cam}.mp4'
        container, stream = _writer(path, cfg)
        truth = {}
        for frame in range(total):
            image, gt = _render(scene, frame, cam_walks, idents, noise[frame % len(noise)])
            if len(gt):
                truth[frame + 1] = gt
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        write_mot(root / f'cam{cam}.gt.txt', truth, decimals=3)
        videos[cam] = path
    record = dict(config=asdict(cfg), start_time=START_TIME.isoformat(),
                  walks=[asdict(w) for w in walks])
    (root / 'walks.json').write_text(json.dumps(record, indent=1))
    _logger.info('wrote %d cameras, %d walks of %d people to %s', cfg.num_cams, len(walks), len(idents), root)
    return videos


def load_walks(root: Path) -> Tuple[dt.datetime, List[Walk], Dict[int, Dict[int, np.ndarray]]]:
    """What :func:`generate_videos` wrote: (start time, walks, {camera: ground truth as read_mot gives it, with
    ids = walk ids}: (N, 7) of (walk_id, x, y, w, h, 1, visibility): read_mot would drop the visibility)."""
    root = Path(root)
    record = json.loads((root / 'walks.json').read_text())
    walks = [Walk(**w) for w in record['walks']]
    truth = {}
    for gt in sorted(root.glob('cam*.gt.txt')):
        cam = int(gt.name[3:].split('.')[0])
        rows = np.loadtxt(gt, delimiter=',', ndmin=2)  # written in frame order
        frames, starts = np.unique(rows[:, 0], return_index=True)
        truth[cam] = {int(f): chunk[:, 1:] for f, chunk in zip(frames, np.split(rows, starts[1:]))}
    return dt.datetime.fromisoformat(record['start_time']), walks, truth
