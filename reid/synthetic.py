"""A synthetic Re-ID dataset, written in the real Market-1501 layout.

Persons are drawn procedurally from shared attribute palettes (clothing colours and patterns, shoes, hair, skin,
height, build, bag kind and side), so most identities share several attributes and a few subtle ones (pattern, bag
side, logo) matter. Each camera has its own background, illumination, scale, blur, noise and JPEG quality; each
image its own viewpoint (a backpack shows from behind, a logo only from the front), walking phase and crop jitter.
The occluded variant (Occluded-Duke-like) hides 15-50% of the figure's pixels in every query, and in a share of the
gallery and training images, with cars, boxes, boards or another person; synth.json reports the distribution and
occluders.json records, per occluded image, the share of the figure hidden in each of 32 bands of rows (top to
bottom): the visibility head's labels (reid.recipe.visibility_targets).

A ``site`` other than 0 is another installation (the domain an adapted model meets: reid.adapt): its own people,
drawn from a differently weighted clothing palette, and cameras with backgrounds of another colour family, the
site's own brightness and colour cast (lamps, white balance), mounted higher (smaller figures), blurrier, noisier and
more compressed. Site 0 is the look every dataset had before sites existed, bit for bit.

Everything is a pure function of (seed, site, identity, image), so a dataset is reproducible bit for bit.
"""
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from .datasets import HIDDEN_BANDS, OCCLUDER_RECORD  # {"split/name.jpg": [hidden share per band of rows], ...}

__all__ = ['SynthConfig', 'generate_dataset', 'draw_person_image', 'draw_figure', 'sample_identity', 'sample_camera',
           'sample_site',
           'coverage_stats', 'hidden_by_band', 'OCCLUDER_KINDS', 'OCCLUDER_RECORD', 'HIDDEN_BANDS']

_logger = logging.getLogger(__name__)

Colour = Tuple[int, int, int]
# palettes lean dark, like real street clothing; most identities share several attributes
UPPER = [(20, 20, 22), (35, 40, 70), (80, 80, 85), (235, 235, 230), (170, 30, 35), (40, 80, 170), (40, 110, 60),
         (220, 190, 40), (220, 130, 160), (110, 70, 40), (150, 150, 155), (100, 50, 130)]
LOWER = [(25, 25, 28), (45, 65, 110), (90, 90, 95), (180, 160, 120), (225, 225, 220), (70, 45, 30), (150, 35, 40)]
SHOES = [(15, 15, 15), (230, 230, 230), (100, 60, 30), (160, 30, 30)]
HAIR = [(15, 12, 10), (80, 50, 25), (200, 170, 100), (140, 140, 140)]
SKIN = [(240, 200, 170), (210, 160, 120), (160, 110, 75), (100, 65, 45)]
BAGS = [(20, 20, 20), (120, 30, 30), (30, 60, 120), (160, 120, 60), (60, 90, 50)]
H, W = 128, 64  # Market-1501 crop size
SCALE = 2  # drawn at 2x then downsampled, for smooth edges


@dataclass(frozen=True)
class SynthConfig:
    """Dataset size and difficulty.

    Args:
        num_ids: identities (half train, half test, disjoint).
        num_cams: cameras; each identity is seen by 2..num_cams of them.
        imgs_per_id: images per identity (spread over its cameras).
        occluded: Occluded-Duke-like: every query occluded, and shares of the gallery and training images.
        occlusion: (min, max) share of the figure's pixels an occluder covers (uniform between them; measured on
            the drawn figure, so a side occluder never hides a narrow figure whole).
        occluded_train / occluded_gallery: shares of training / gallery images occluded (with ``occluded``).
        difficulty: 0..1; higher shares more attributes between identities (smaller palettes) and jitters more.
        junk: junk (``-1``) gallery images; distractors: distractor (``0000``) gallery images.
        seed: everything follows from it.
        site: 0, or another installation (its own people and camera looks, as the module says).
    """
    num_ids: int = 100
    num_cams: int = 6
    imgs_per_id: int = 16
    occluded: bool = False
    occlusion: Tuple[float, float] = (0.15, 0.5)
    occluded_train: float = 0.3
    occluded_gallery: float = 0.1
    difficulty: float = 0.5
    junk: int = 20
    distractors: int = 20
    seed: int = 0
    site: int = 0


# ---- attributes -------------------------------------------------------------------------------------------------
def _palette(colours: List[Colour], difficulty: float) -> List[Colour]:
    n = max(3, int(round(len(colours) * (1.0 - 0.5 * difficulty))))
    return colours[:n]


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _pick_common(rng: np.random.Generator, items: list):
    """Earlier palette entries are more common (dark clothes, like real streets), so identities share more."""
    p = 0.75 ** np.arange(len(items))
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def sample_site(seed: int, site: int) -> Optional[Dict]:
    """What one installation changes, drawn once per site; None for site 0 (the neutral look)."""
    if site == 0:
        return None
    rng = np.random.default_rng([seed, 5, site])
    order = {name: [int(i) for i in rng.permutation(len(p))]
             for name, p in (('upper', UPPER), ('lower', LOWER), ('shoes', SHOES), ('hair', HAIR))}
    return dict(
        tint=tuple(float(c) for c in rng.uniform(-45, 45, 3)),  # backgrounds of another colour family
        gain=float((0.7 if site % 2 else 1.3) * rng.uniform(0.95, 1.05)),  # a dim or a bright site
        cast=tuple(float(c) for c in rng.uniform(0.82, 1.18, 3)),  # lamps, white balance
        scale=(0.62, 0.8), blur=(0.5, 1.4), noise=(5.0, 12.0), quality=(40, 75),  # higher, cheaper cameras
        palette=order,  # which colours are common on this site's people
    )


def _site_palette(colours: List[Colour], site: Optional[Dict], name: str) -> List[Colour]:
    return colours if site is None else [colours[i] for i in site['palette'][name]]


def sample_identity(seed: int, pid: int, difficulty: float = 0.5, site: int = 0) -> Dict:
    """The fixed look of one identity (of ``site``: another site's people are other people)."""
    rng = np.random.default_rng([seed, 1, pid] if site == 0 else [seed, 1, pid, site])
    look = sample_site(seed, site)
    upper = _palette(_site_palette(UPPER, look, 'upper'), difficulty)
    bag_kind = _pick(rng, ['none', 'none', 'backpack', 'shoulder', 'handbag'])
    return dict(
        upper=_pick_common(rng, upper), upper2=_pick(rng, UPPER),
        pattern=_pick(rng, ['solid', 'solid', 'stripes', 'two_tone', 'logo']),
        long_sleeves=bool(rng.random() < 0.6),
        lower=_pick_common(rng, _palette(_site_palette(LOWER, look, 'lower'), difficulty)),
        lower_kind=_pick(rng, ['trousers', 'trousers', 'shorts', 'skirt']),
        shoes=_pick_common(rng, _site_palette(SHOES, look, 'shoes')),
        hair=_pick_common(rng, _site_palette(HAIR, look, 'hair')), long_hair=bool(rng.random() < 0.35),
        skin=_pick(rng, SKIN), height=float(rng.uniform(0.82, 0.97)), build=float(rng.uniform(0.8, 1.2)),
        bag=bag_kind, bag_colour=_pick(rng, BAGS), bag_side=_pick(rng, [-1, 1]),
        hat=_pick(rng, UPPER) if rng.random() < 0.12 else None,
    )


def sample_camera(seed: int, cam: int, difficulty: float = 0.5, site: int = 0) -> Dict:
    """The fixed look of one camera: background, light, scale, blur, noise, JPEG quality (of ``site``)."""
    d = difficulty
    look = sample_site(seed, site)
    if look is not None:
        rng = np.random.default_rng([seed, 2, cam, site])
        tint = np.asarray(look['tint'])
        return dict(
            wall=tuple(int(c) for c in np.clip(rng.integers(60, 200, 3) + tint, 0, 255)),
            floor=tuple(int(c) for c in np.clip(rng.integers(50, 170, 3) + tint, 0, 255)),
            horizon=float(rng.uniform(0.45, 0.7)), clutter=int(rng.integers(4, 12)),
            gain=look['gain'] * float(rng.uniform(1 - 0.4 * d, 1 + 0.3 * d)),
            cast=tuple(float(a * b) for a, b in zip(look['cast'], rng.uniform(1 - 0.2 * d, 1 + 0.2 * d, 3))),
            scale=float(rng.uniform(*look['scale'])), blur=float(rng.uniform(*look['blur'])),
            noise=float(rng.uniform(*look['noise'])), quality=int(rng.integers(*look['quality'])),
        )
    rng = np.random.default_rng([seed, 2, cam])
    return dict(
        wall=tuple(int(c) for c in rng.integers(60, 200, 3)), floor=tuple(int(c) for c in rng.integers(50, 170, 3)),
        horizon=float(rng.uniform(0.55, 0.8)), clutter=int(rng.integers(2, 8)),
        gain=float(rng.uniform(1 - 0.4 * d, 1 + 0.3 * d)),
        cast=tuple(float(c) for c in rng.uniform(1 - 0.2 * d, 1 + 0.2 * d, 3)),
        scale=float(rng.uniform(0.8, 1.0)), blur=float(rng.uniform(0, 1.2 * d)),
        noise=float(rng.uniform(2, 4 + 8 * d)), quality=int(rng.integers(55, 95)),
    )


# ---- drawing ----------------------------------------------------------------------------------------------------
def _draw_background(draw: ImageDraw.ImageDraw, cam: Dict, rng: np.random.Generator) -> None:
    w, h = W * SCALE, H * SCALE
    y0 = int(h * cam['horizon'])
    draw.rectangle([0, 0, w, y0], fill=cam['wall'])
    draw.rectangle([0, y0, w, h], fill=cam['floor'])
    crng = np.random.default_rng(int(rng.integers(1 << 31)))
    for _ in range(cam['clutter']):
        x, y = int(crng.integers(0, w)), int(crng.integers(0, y0))
        c = tuple(int(v) for v in np.clip(np.array(cam['wall']) + crng.integers(-50, 50, 3), 0, 255))
        draw.rectangle([x, y, x + int(crng.integers(8, 60)), y + int(crng.integers(8, 80))], fill=c)


def _draw_person(draw: ImageDraw.ImageDraw, ident: Dict, view: str, phase: float,
                 cx: float, top: float, fh: float) -> None:
    """Draw a figure of height ``fh`` px with its head top at ``top``; view is front, back, left or right."""
    side = view in ('left', 'right')
    bw = fh * 0.26 * ident['build'] * (0.65 if side else 1.0)  # torso width
    head_r = fh * 0.065
    neck = top + 2 * head_r
    hip = top + fh * 0.52
    foot = top + fh
    skin, upper, lower = ident['skin'], ident['upper'], ident['lower']
    facing = {'front': 0, 'back': 0, 'left': -1, 'right': 1}[view]

    # backpack seen from the side sticks out behind the torso
    if ident['bag'] == 'backpack' and side:
        bx = cx - facing * bw * 0.75
        draw.rectangle([bx - bw * 0.3, neck + fh * 0.03, bx + bw * 0.3, hip - fh * 0.08], fill=ident['bag_colour'])
    # legs (walking phase spreads them)
    spread = fh * 0.07 * np.sin(phase)
    leg_w = bw * (0.4 if not side else 0.55)
    for s in (-1, 1):
        lx = cx + s * (bw * 0.22 if not side else 0) + s * spread
        leg_top, knee = hip, hip + (foot - hip) * 0.45
        if ident['lower_kind'] == 'shorts':
            draw.rectangle([lx - leg_w / 2, leg_top, lx + leg_w / 2, knee], fill=lower)
            draw.rectangle([lx - leg_w / 2.6, knee, lx + leg_w / 2.6, foot - fh * 0.03], fill=skin)
        else:
            draw.rectangle([lx - leg_w / 2, leg_top, lx + leg_w / 2, foot - fh * 0.03], fill=lower)
        draw.rectangle([lx - leg_w / 2, foot - fh * 0.035, lx + leg_w / 2 + facing * leg_w * 0.4, foot],
                       fill=ident['shoes'])
    if ident['lower_kind'] == 'skirt':
        draw.polygon([(cx - bw * 0.5, hip), (cx + bw * 0.5, hip), (cx + bw * 0.75, hip + fh * 0.2),
                      (cx - bw * 0.75, hip + fh * 0.2)], fill=lower)
    # arms
    arm_w = bw * 0.22
    sleeve = ident['upper'] if ident['long_sleeves'] else skin
    for s in ((-1, 1) if not side else (0,)):
        ax = cx + s * (bw / 2 + arm_w / 2) - (np.sin(phase) * fh * 0.05 if side else 0)
        draw.rectangle([ax - arm_w / 2, neck + fh * 0.02, ax + arm_w / 2, neck + fh * 0.12], fill=upper)
        draw.rectangle([ax - arm_w / 2, neck + fh * 0.12, ax + arm_w / 2, hip + fh * 0.03], fill=sleeve)
    # torso and its pattern
    box = [cx - bw / 2, neck, cx + bw / 2, hip]
    draw.rectangle(box, fill=upper)
    pattern, upper2 = ident['pattern'], ident['upper2']
    if pattern == 'stripes':
        for y in np.arange(neck + fh * 0.04, hip, fh * 0.06):
            draw.rectangle([box[0], y, box[2], y + fh * 0.02], fill=upper2)
    elif pattern == 'two_tone':
        split = cx if not side else cx + facing * bw * 0.1
        draw.rectangle([box[0], neck, split, hip] if view != 'back' else [split, neck, box[2], hip], fill=upper2)
    elif pattern == 'logo' and view == 'front':
        r = bw * 0.18
        draw.ellipse([cx - r, neck + fh * 0.1 - r, cx + r, neck + fh * 0.1 + r], fill=upper2)
    # backpack from behind covers the torso; from the front only the straps show
    if ident['bag'] == 'backpack' and view == 'back':
        draw.rectangle([cx - bw * 0.38, neck + fh * 0.04, cx + bw * 0.38, hip - fh * 0.05], fill=ident['bag_colour'])
    elif ident['bag'] == 'backpack' and view == 'front':
        for s in (-1, 1):
            draw.line([(cx + s * bw * 0.3, neck), (cx + s * bw * 0.3, neck + fh * 0.2)], fill=ident['bag_colour'],
                      width=max(1, int(bw * 0.08)))
    elif ident['bag'] in ('shoulder', 'handbag'):
        # the bag's side flips when seen from behind; hidden behind the body on the far side in profile
        bag_side = ident['bag_side'] * (-1 if view == 'back' else 1)
        if not (side and bag_side != facing):
            bx = cx + bag_side * (bw * 0.62 if not side else 0)
            by = hip - fh * 0.02 if ident['bag'] == 'shoulder' else hip + fh * 0.08
            size = fh * (0.09 if ident['bag'] == 'shoulder' else 0.07)
            draw.rectangle([bx - size * 0.7, by - size, bx + size * 0.7, by + size * 0.4], fill=ident['bag_colour'])
            if ident['bag'] == 'shoulder':
                draw.line([(cx - bag_side * bw * 0.35, neck), (bx, by - size)], fill=ident['bag_colour'],
                          width=max(1, int(bw * 0.06)))
    # head, hair, hat
    hx = cx + facing * head_r * 0.2
    if ident['long_hair'] and view != 'front':
        draw.rectangle([hx - head_r, top + head_r, hx + head_r, neck + fh * 0.12], fill=ident['hair'])
    draw.ellipse([hx - head_r, top, hx + head_r, top + 2 * head_r], fill=skin)
    if view == 'back':
        draw.ellipse([hx - head_r, top, hx + head_r, top + 2 * head_r], fill=ident['hair'])
    else:
        draw.chord([hx - head_r, top - head_r * 0.1, hx + head_r, top + head_r * 1.3], 180, 360, fill=ident['hair'])
        if ident['long_hair']:
            for s in (-1, 1):
                draw.rectangle([hx + s * head_r * 0.7 - head_r * 0.3, top + head_r * 0.5,
                                hx + s * head_r * 0.7 + head_r * 0.3, neck + fh * 0.08], fill=ident['hair'])
    if ident['hat'] is not None:
        draw.chord([hx - head_r * 1.05, top - head_r * 0.3, hx + head_r * 1.05, top + head_r * 1.1], 180, 360,
                   fill=ident['hat'])


def draw_figure(draw: ImageDraw.ImageDraw, ident: Dict, view: str, phase: float, cx: float, top: float,
                fh: float) -> None:
    """Draw ``ident`` (:func:`sample_identity`) ``fh`` px tall, centred on ``cx`` with its head top at ``top``;
    ``view``: front, back, left or right; ``phase``: walking phase in radians (it spreads the legs and swings the
    arms). For scenes of whole frames, e.g. video.synthetic."""
    _draw_person(draw, ident, view, phase, cx, top, fh)


OCCLUDER_KINDS = ('car', 'box', 'board', 'person')


def _sample_occluder(rng: np.random.Generator, seed: int) -> Dict:
    """Everything about an occluder except how far it reaches (its kind, colour, side, and the passer-by's look)."""
    kind = _pick(rng, list(OCCLUDER_KINDS))
    return dict(kind=kind, colour=tuple(int(c) for c in rng.integers(20, 230, 3)), side=_pick(rng, [-1, 1]),
                other=sample_identity(seed, 100000 + int(rng.integers(1 << 20))) if kind == 'person' else None,
                view=_pick(rng, ['front', 'back', 'left', 'right']), phase=float(rng.uniform(0, 6.3)))


def _draw_occluder(draw: ImageDraw.ImageDraw, spec: Dict, reach: float, top: float, fh: float, cx: float,
                   bw: float) -> None:
    """Draw an occluder reaching ``reach`` (0..1) into the figure: a car/box rising from below, a board from a
    side, or a passer-by in front, stepping from beside the figure towards its centre."""
    kind, colour, s = spec['kind'], spec['colour'], spec['side']
    w = W * SCALE
    if kind in ('car', 'box'):
        y = top + fh * (1 - reach)
        draw.rectangle([0, y, w, H * SCALE], fill=colour)
        if kind == 'car':
            draw.rectangle([w * 0.1, y - fh * 0.06, w * 0.9, y + fh * 0.04], fill=tuple(c // 2 for c in colour))
            for x in (w * 0.2, w * 0.8):
                r = fh * 0.06
                draw.ellipse([x - r, H * SCALE - 2 * r, x + r, H * SCALE], fill=(15, 15, 15))
    elif kind == 'board':
        edge = cx + s * (bw * 0.8 - reach * 1.6 * bw)  # from beyond the arms to beyond the far side
        draw.rectangle([edge, 0, w, H * SCALE] if s > 0 else [0, 0, edge, H * SCALE], fill=colour)
    else:
        _draw_person(draw, spec['other'], spec['view'], spec['phase'], cx + s * bw * (1.6 - 1.6 * reach),
                     top + fh * 0.05, fh * 1.05)


def hidden_by_band(figure: np.ndarray, occluder: np.ndarray, bands: int = HIDDEN_BANDS) -> np.ndarray:
    """Per band of rows (top to bottom), the share of the figure's pixels the occluder covers (0 where the band
    holds none of the figure). ``figure`` and ``occluder``: boolean masks (rows, cols) of one image."""
    edges = np.linspace(0, figure.shape[0], bands + 1).round().astype(int)
    fig_rows = figure.sum(1)
    hid_rows = (figure & occluder).sum(1)
    fig = np.add.reduceat(fig_rows, edges[:-1])
    hid = np.add.reduceat(hid_rows, edges[:-1])
    return np.where(fig > 0, hid / np.maximum(fig, 1), 0.0)


def _occlude(person: Image.Image, spec: Dict, target: float, top: float, fh: float, cx: float,
             bw: float) -> Tuple[Image.Image, float]:
    """The occluder layer that hides at least ``target`` of the figure's pixels, as little more as its reach allows
    (bisection on the reach), and the share it hides."""
    figure = np.asarray(person)[..., 3] > 0
    area = max(int(figure.sum()), 1)

    def layer(reach: float) -> Tuple[Image.Image, float]:
        occ = Image.new('RGBA', person.size, (0, 0, 0, 0))
        _draw_occluder(ImageDraw.Draw(occ), spec, reach, top, fh, cx, bw)
        return occ, float((figure & (np.asarray(occ)[..., 3] > 0)).sum()) / area

    lo, hi = 0.0, 1.0
    best = layer(hi)  # the farthest reach: the fallback that hides the most
    for _ in range(10):
        mid = (lo + hi) / 2
        occ, share = layer(mid)
        if share >= target:
            hi = mid
            if share <= best[1]:
                best = (occ, share)
        else:
            lo = mid
    return best


def draw_person_image(ident: Optional[Dict], cam: Dict, rng: np.random.Generator, occlude: bool = False,
                      seed: int = 0, crop: Optional[str] = None,
                      occlusion: Tuple[float, float] = (0.15, 0.5)
                      ) -> Tuple[Image.Image, Optional[float], Optional[np.ndarray]]:
    """One 128x64 RGB crop of ``ident`` seen by ``cam`` (``ident=None``: background only, for junk images), the
    share of the figure's pixels an occluder covers and that share per band of rows (:func:`hidden_by_band`; both
    None when not occluded).

    ``occlusion`` (min, max): that share is drawn uniformly between them. ``crop`` ('top' or 'bottom') shows only
    part of the figure, for distractor boxes.
    """
    img = Image.new('RGB', (W * SCALE, H * SCALE))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, cam, rng)
    fh = H * SCALE * ident['height'] * cam['scale'] * float(rng.uniform(0.93, 1.05)) if ident else 0
    top = (H * SCALE - fh) / 2 + float(rng.normal(0, 3))
    cx = W * SCALE / 2 + float(rng.normal(0, 4))
    covered = hidden = None
    if ident is not None:
        if crop == 'top':
            top += fh * 0.45
        elif crop == 'bottom':
            top -= fh * 0.5
        view = _pick(rng, ['front', 'back', 'left', 'right'])
        person = Image.new('RGBA', img.size, (0, 0, 0, 0))
        _draw_person(ImageDraw.Draw(person), ident, view, float(rng.uniform(0, 2 * np.pi)), cx, top, fh)
        img.paste(person, mask=person)
        if occlude:
            target = float(rng.uniform(*occlusion))
            occ, covered = _occlude(person, _sample_occluder(rng, seed), target, top, fh, cx,
                                    fh * 0.26 * ident['build'])
            img.paste(occ, mask=occ)
            hidden = hidden_by_band(np.asarray(person)[..., 3] > 0, np.asarray(occ)[..., 3] > 0)
    img = img.resize((W, H), Image.BILINEAR)
    if cam['blur'] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam['blur']))
    arr = np.asarray(img, dtype=np.float32)
    light = cam['gain'] * float(rng.uniform(0.9, 1.1)) * np.asarray(cam['cast'], dtype=np.float32)
    arr = arr * light + rng.normal(0, cam['noise'], arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), covered, hidden


# ---- dataset ----------------------------------------------------------------------------------------------------
def coverage_stats(shares: List[float]) -> Dict[str, float]:
    """How much of each occluded figure is hidden: count, min, quartiles, max, mean (shares of figure pixels)."""
    q = np.percentile(shares, [0, 10, 25, 50, 75, 90, 100])
    return dict(images=len(shares), min=round(float(q[0]), 3), p10=round(float(q[1]), 3), p25=round(float(q[2]), 3),
                median=round(float(q[3]), 3), p75=round(float(q[4]), 3), p90=round(float(q[5]), 3),
                max=round(float(q[6]), 3), mean=round(float(np.mean(shares)), 3))


def _name(pid: int, cam: int, frame: int, box: int) -> str:
    prefix = '-1' if pid < 0 else f'{pid:04d}'
    return f'{prefix}_c{cam}s1_{frame:06d}_{box:02d}.jpg'


def generate_dataset(root: Path, cfg: SynthConfig = SynthConfig(), progress: bool = True) -> Dict[str, int]:
    """Write ``bounding_box_train/``, ``bounding_box_test/`` and ``query/`` under ``root`` (Market-1501 layout).

    Identities 1..num_ids/2 train, the rest test; each test identity has one query per camera it appears in and the
    rest of its images in the gallery. Returns image counts per split.
    """
    if cfg.num_ids < 4 or cfg.num_cams < 2 or cfg.imgs_per_id < 4:
        raise ValueError('need num_ids >= 4, num_cams >= 2 and imgs_per_id >= 4')
    if not 0 <= cfg.occlusion[0] <= cfg.occlusion[1] <= 1:
        raise ValueError(f'occlusion must be (min, max) with 0 <= min <= max <= 1, got {tuple(cfg.occlusion)}')
    root = Path(root)
    dirs = {s: root / s for s in ('bounding_box_train', 'bounding_box_test', 'query')}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cams = {c: sample_camera(cfg.seed, c, cfg.difficulty, cfg.site) for c in range(1, cfg.num_cams + 1)}
    n_train = cfg.num_ids // 2
    jobs: List[Tuple[str, int, int, bool]] = []  # (split, pid, cam, occluded)
    for pid in range(1, cfg.num_ids + 1):
        rng = np.random.default_rng([cfg.seed, 3, pid])
        k = int(rng.integers(2, cfg.num_cams + 1))
        seen = sorted(int(c) for c in rng.choice(np.arange(1, cfg.num_cams + 1), size=k, replace=False))
        per_cam = np.full(k, max(2, cfg.imgs_per_id // k))
        if pid <= n_train:
            for c, n in zip(seen, per_cam):
                jobs += [('bounding_box_train', pid, c, bool(rng.random() < cfg.occluded_train) and cfg.occluded)
                         for _ in range(n)]
        else:
            for c, n in zip(seen, per_cam):
                jobs.append(('query', pid, c, cfg.occluded))
                jobs += [('bounding_box_test', pid, c, bool(rng.random() < cfg.occluded_gallery) and cfg.occluded)
                         for _ in range(n - 1)]
    jobs += [('bounding_box_test', -1, 1 + i % cfg.num_cams, False) for i in range(cfg.junk)]
    jobs += [('bounding_box_test', 0, 1 + i % cfg.num_cams, False) for i in range(cfg.distractors)]

    counts: Dict[str, int] = {s: 0 for s in dirs}
    covered: Dict[str, List[float]] = {}
    hidden_record: Dict[str, List[float]] = {}
    frames: Dict[Tuple[int, int], int] = {}
    for i, (split, pid, cam, occ) in enumerate(tqdm(jobs, desc='synth', unit='img', disable=not progress)):
        rng = np.random.default_rng([cfg.seed, 4, i])
        frame = frames.get((pid, cam), 0) + 1
        frames[(pid, cam)] = frame
        name = _name(pid, cam, 100 * frame + int(rng.integers(100)), 1)
        if pid > 0:
            ident, crop = sample_identity(cfg.seed, pid, cfg.difficulty, cfg.site), None
        elif pid == 0:  # distractor: part of a person no identity has
            ident, crop = sample_identity(cfg.seed, 200000 + i, cfg.difficulty, cfg.site), _pick(rng, ['top', 'bottom'])
        else:  # junk: background only
            ident, crop = None, None
        img, share, hidden = draw_person_image(ident, cams[cam], rng, occlude=occ, seed=cfg.seed, crop=crop,
                                       occlusion=tuple(cfg.occlusion))
        img.save(dirs[split] / name, quality=cams[cam]['quality'])
        counts[split] += 1
        if share is not None:
            covered.setdefault(split, []).append(share)
            hidden_record[f'{split}/{name}'] = [round(float(h), 3) for h in hidden]
    stats = {split: coverage_stats(v) for split, v in covered.items()}
    (root / OCCLUDER_RECORD).write_text(json.dumps(hidden_record, separators=(',', ':')))
    (root / 'synth.json').write_text(json.dumps(dict(asdict(cfg), counts=counts, occluded_share_of_figure=stats),
                                                indent=2))
    _logger.info('wrote %s to %s', counts, root)
    return counts
