"""Video ingest, measured on the synthetic multi-camera video (video.synthetic) against its ground truth.

Prints markdown tables:
  * per camera: the built-in detector's precision / recall; tracking MOTA / IDF1 / HOTA on its boxes and on the
    ground-truth boxes (of the people at least 30% in view); sightings found vs walks;
  * ingest speed per stage (decode, detect, track, crop, choose; with --checkpoint also embed and store: the service's
    share of the work, each sighting's crops embedded in one batch and written as the ingest job writes them, to a
    SQLite database and image store of the workdir) in frames/s, with the built-in detector, against real time;
  * peak RSS of one camera's ingest (a process of its own) for a short and a long video;
  * cross-camera identity IDF1 (global ids) after linking the sightings (video.identities) by their pooled vectors:
    colour histograms (no learning) and, with --checkpoint, a trained model's embeddings, over a sweep of
    thresholds.

    python -m bench.video --workdir /tmp/bench-video --generate-only   # the videos, once (minutes)
    python -m bench.video --workdir /tmp/bench-video --checkpoint runs/la-tiny/best.safetensors
    python -m bench.video --workdir /tmp/bench-video --seconds 60 --rss-minutes 1 5   # quicker
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict

import numpy as np

from video import sightings_from_video
from video.detect import BackgroundDetector
from video.evaluate import MIN_VISIBILITY, detection_scores, tracking_scores, visible_boxes
from video.sightings import STAGES
from video.synthetic import VideoSynthConfig, generate_videos, load_walks


def synthetic(root: Path, cfg: VideoSynthConfig) -> Path:
    """Generate ``cfg`` under ``root`` unless it is already there."""
    record = root / 'walks.json'
    if not record.exists() or json.loads(record.read_text())['config'] != json.loads(json.dumps(asdict(cfg))):
        began = time.perf_counter()
        generate_videos(root, cfg)
        print(f'generated {root} in {time.perf_counter() - began:.0f} s', file=sys.stderr)
    return root


class RecordingDetector(BackgroundDetector):
    """The built-in detector, keeping what it found per frame for scoring."""

    def __post_init__(self):
        super().__post_init__()
        self.found: Dict[int, np.ndarray] = {}
        self._index = 0

    def __call__(self, image):
        boxes = super().__call__(image)
        self._index += 1
        self.found[self._index] = np.concatenate([-np.ones((len(boxes), 1)), boxes], 1)
        return boxes


def ingest(path, start, boxes=None, detector=None, visible_share=None):
    """(sightings, {frame (1-based): tracked boxes}, stage seconds, frames)."""
    tracks, timings, done = {}, {}, [0]
    sightings = list(sightings_from_video(path, 'cam', start, boxes, detector=detector, timings=timings,
                                          on_tracks=lambda f, t: tracks.__setitem__(f + 1, t),
                                          progress=lambda d, _: done.__setitem__(0, d), visible_share=visible_share))
    return sightings, tracks, timings, done[0]


def accuracy(root: Path, visible_share=None):
    """(table rows, stage seconds, frames, {boxes kind: {camera: (sightings, tracks)}}); ``visible_share``: a
    model's visibility head choosing the crops, as the ingest job lends the active model's."""
    start, walks, truth = load_walks(root)
    rows, totals, frames = [], {s: 0.0 for s in STAGES}, 0
    runs: Dict[str, Dict[int, tuple]] = {'detector': {}, 'ground truth': {}}
    for cam in sorted(truth):
        path = root / f'cam{cam}.mp4'
        detector = RecordingDetector()
        sightings, on_detector, timings, n = ingest(path, start, detector=detector, visible_share=visible_share)
        frames += n
        for stage in STAGES:
            totals[stage] += timings[stage]
        det = detection_scores(truth[cam], detector.found)
        given = {f: r[:, :6] for f, r in visible_boxes(truth[cam]).items()}
        truth_sightings, on_truth, _, _ = ingest(path, start, boxes=given, visible_share=visible_share)
        runs['detector'][cam] = (sightings, on_detector)
        runs['ground truth'][cam] = (truth_sightings, on_truth)
        d, g = tracking_scores(truth[cam], on_detector), tracking_scores(truth[cam], on_truth)
        cam_walks = sum(w.camera == cam for w in walks)
        rows.append(f"| {cam} | {det['precision']:.3f} | {det['recall']:.3f} | {d['mota']:.3f} | {d['idf1']:.3f} | "
                    f"{d['hota']:.3f} | {d['num_switches']:.0f} | {g['mota']:.3f} | {g['idf1']:.3f} | "
                    f"{g['hota']:.3f} | {g['num_switches']:.0f} | {len(sightings)} / {cam_walks} |")
    return rows, totals, frames, runs


def embed_and_store(sightings, checkpoint: Path, workdir: Path) -> Dict[str, float]:
    """Seconds the service's stages take for ``sightings``: ``embed`` (each sighting's crops in one batch on the
    torch embedder, as the service's model thread embeds a followed sighting) and ``store`` (image files, rows and
    change log in one transaction per sighting: app.gallery_writes.write_images, as the ingest job writes)."""
    import shutil

    from app.gallery_writes import write_images
    from app.sightings import sighting_rows
    from storage.db import make_engine, make_sessionmaker
    from storage.images import ImageStore
    from storage.migrate import upgrade
    embed = ModelVectors(checkpoint)
    if not sightings:
        raise SystemExit('no sightings to embed: the detector found no track in the video')
    embed([sightings[0].crops[0].image])  # warm-up: the first forward's one-off costs are no stage's
    began = time.perf_counter()
    for s in sightings:
        embed([c.image for c in s.crops])
    embedded = time.perf_counter() - began
    target = workdir / 'store-stage'
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    database = make_engine(f'sqlite:///{target / "amg.db"}')
    upgrade(database)
    Session, images = make_sessionmaker(database), ImageStore(target / 'images')
    began = time.perf_counter()
    for s in sightings:
        items, metas, columns = sighting_rows(s)
        write_images(Session, database, images, items, metas, sighting=columns)
    stored = time.perf_counter() - began
    database.dispose()
    return dict(embed=embedded, store=stored)


def sighting_vectors(sightings, embed) -> np.ndarray:
    """One vector per sighting: its crops' vectors pooled (reid.matching.pool_parts, as group queries are)."""
    from reid.matching import pool_parts
    vectors = []
    for s in sightings:
        crops = embed([c.image for c in s.crops])
        vectors.append(pool_parts(crops, embed.parts))
    return np.stack(vectors)


class HistogramVectors:
    """The no-learning baseline (bench.synthetic_quality): colour histograms of 4 stripes, one part."""
    parts = 1

    def __call__(self, images):
        from bench.synthetic_quality import histogram_vector
        return np.stack([histogram_vector(im) for im in images])


class ModelVectors:
    def __init__(self, checkpoint: Path):
        from models.checkpoints import read_metadata
        from models.embedder import Embedder
        self.embedder = Embedder(str(checkpoint))
        self.parts = self.embedder.num_parts
        # the cosine the service takes for a match (its searches and re-clustering's default), as a distance
        min_score = (read_metadata(str(checkpoint))[1] if str(checkpoint).endswith('.safetensors') else {}).get(
            'min_score')
        self.own_threshold = None if min_score is None else round(1 - float(min_score), 6)

    def __call__(self, images):
        return np.asarray(self.embedder(images), dtype=np.float32)

    def visible_share(self, images):
        """The share of the person each image shows, as the ingest job asks the active model's head
        (app.ingest.active_visible_share)."""
        return self.embedder.embed_with_visibility(images)[1].mean(1)


def identities(root: Path, runs, checkpoint, thresholds):
    """Table rows: identity IDF1 per vectors x boxes x comparison x threshold (a model's own threshold too: the
    one the service's re-clustering uses by default; the centred vectors have no calibrated one)."""
    from video.evaluate import identity_scores
    from video.identities import link_sightings
    _, walks, truth = load_walks(root)
    person_of_walk = {w.walk_id: w.person_id for w in walks}
    people = len({w.person_id for w in walks})
    kinds = {'colour histogram (no learning)': HistogramVectors()}
    if checkpoint:
        kinds[f'{Path(checkpoint).name}'] = ModelVectors(checkpoint)
    rows = []
    for kind, embed in kinds.items():
        for boxes, by_cam in runs.items():
            sightings = [(cam, s) for cam, (ss, _) in sorted(by_cam.items()) for s in ss]
            vectors = sighting_vectors([s for _, s in sightings], embed)
            tracks = {cam: t for cam, (_, t) in by_cam.items()}
            own = getattr(embed, 'own_threshold', None)
            for centring in (False, True):
                sweep = sorted(set(thresholds) | ({own} if own is not None and not centring else set()))
                for threshold in sweep:
                    labels = link_sightings(vectors, [str(c) for c, _ in sightings],
                                            [s.first_time for _, s in sightings], [s.last_time for _, s in sightings],
                                            threshold=threshold, camera_centring=centring)
                    of_track = {(cam, s.track_id): int(label) for (cam, s), label in zip(sightings, labels)}
                    score = identity_scores(truth, tracks, person_of_walk, of_track)
                    shown = f'**{threshold:g} (the model\'s)**' if threshold == own and not centring else f'{threshold:g}'
                    rows.append(f"| {kind} | {boxes} | {'camera-centred' if centring else 'cosine'} | {shown} | "
                                f"{len(set(labels))} / {people} | {score['idf1']:.3f} | {score['idp']:.3f} | "
                                f"{score['idr']:.3f} |")
    return rows


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: the peak), in MB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the peak


def rss_child(path: Path) -> None:
    """Ingest one video with the built-in detector, dropping each sighting as the service would after storing it;
    print the RSS before (this module's imports: OpenCV, PyAV, trackers, and reid's with torch) and the peak."""
    start, _, _ = load_walks(path.parent)
    before = _status_mb('VmRSS')
    began, count = time.perf_counter(), 0
    for _ in sightings_from_video(path, 'cam', start):
        count += 1
    print(json.dumps(dict(before_mb=before, peak_rss_mb=_status_mb('VmHWM'), sightings=count,
                          seconds=time.perf_counter() - began)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', type=Path, required=True)
    p.add_argument('--seconds', type=float, default=180, help='length of each camera of the accuracy video')
    p.add_argument('--people', type=int, default=30)
    p.add_argument('--cams', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rss-minutes', type=float, nargs='*', default=[1, 20],
                   help='one-camera videos to measure the peak RSS of (none: skip)')
    p.add_argument('--checkpoint', help='a trained model: cross-camera identities from its embeddings too')
    p.add_argument('--thresholds', type=float, nargs='*',
                   default=[0.002, 0.003, 0.005, 0.007, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5],
                   help='linking thresholds (cosine distance, average linkage) to sweep')
    p.add_argument('--generate-only', action='store_true',
                   help='only write the videos (untimed: run it first, then time the rest alone on the machine)')
    p.add_argument('--rss-child', type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.rss_child:
        return rss_child(a.rss_child)

    cfg = VideoSynthConfig(num_people=a.people, num_cams=a.cams, seconds=a.seconds, seed=a.seed)
    rss_cfgs = {minutes: VideoSynthConfig(
        # as many walks a minute as one camera of the accuracy video has (a person there walks past ~2 cameras)
        num_people=max(2, round(2 * minutes * a.people / a.seconds * 60 / a.cams)), num_cams=1, seconds=minutes * 60,
        seed=a.seed) for minutes in a.rss_minutes}
    root = synthetic(a.workdir / 'accuracy', cfg)
    if a.generate_only:
        for minutes, one in rss_cfgs.items():
            synthetic(a.workdir / f'rss-{minutes:g}min', one)
        return
    model = ModelVectors(a.checkpoint) if a.checkpoint else None
    share = model.visible_share if model is not None and model.embedder.has_visibility else None
    rows, totals, frames, runs = accuracy(root, share)
    print(f'synthetic video: {a.cams} cameras x {a.seconds:.0f} s, {cfg.size[0]}x{cfg.size[1]} at {cfg.fps:.0f} fps, '
          f'{a.people} people, seed {a.seed}; ground truth of people >= {MIN_VISIBILITY:.0%} in view; crops chosen '
          f'{"with" if share else "without"} a visibility head\n')
    print('| camera | detector precision | recall | MOTA (detector boxes) | IDF1 | HOTA | ID switches | '
          'MOTA (ground-truth boxes) | IDF1 | HOTA | ID switches | sightings / walks |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))

    stages = [stage for stage in STAGES if stage != 'choose' or share is not None]
    if a.checkpoint:
        detected = [replace(s, camera_id=str(cam)) for cam in sorted(runs['detector'])
                    for s in runs['detector'][cam][0]]
        totals.update(embed_and_store(detected, Path(a.checkpoint), a.workdir))
        stages += ['embed', 'store']
    total = sum(totals[stage] for stage in stages)
    print(f'\ningest with the built-in detector, {frames} frames of {cfg.size[0]}x{cfg.size[1]}:\n')
    print('| stage | frames/s | share of the time |')
    print('|---|---|---|')
    for stage in stages:
        print(f'| {stage} | {frames / totals[stage]:.0f} | {totals[stage] / total:.0%} |')
    print(f'| all | {frames / total:.0f} | {frames / total / cfg.fps:.1f}x real time at {cfg.fps:.0f} fps |')

    print('\ncross-camera identities: sightings linked by average-linkage clustering of their pooled vectors, '
          'same-camera overlaps never linked; IDF1 over all cameras by global person id:\n')
    print('| vectors | boxes | compared | threshold | identities / people | identity IDF1 | IDP | IDR |')
    print('|---|---|---|---|---|---|---|---|')
    print('\n'.join(identities(root, runs, a.checkpoint, a.thresholds)))

    if a.rss_minutes:
        print('\none camera ingested in a process of its own (built-in detector):\n')
        print('| video | frames | sightings | RSS before ingest (MB) | peak RSS (MB) | growth (MB) | seconds |')
        print('|---|---|---|---|---|---|---|')
        for minutes, one in rss_cfgs.items():
            cam_root = synthetic(a.workdir / f'rss-{minutes:g}min', one)
            out = subprocess.run([sys.executable, '-m', 'bench.video', '--workdir', str(a.workdir),
                                  '--rss-child', str(cam_root / 'cam1.mp4')], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {minutes:g} min | {round(one.seconds * one.fps)} | {r['sightings']} | {r['before_mb']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['before_mb']:.0f} | {r['seconds']:.0f} |")


if __name__ == '__main__':
    main()
