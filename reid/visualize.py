"""Figures without a plotting library: ranked retrieval strips (torchreid visrank style), CMC curves, scatter plots."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .datasets import ImageRecord

__all__ = ['save_ranked_results', 'save_cmc_curve', 'save_scatter']

GREEN, RED, GREY = (40, 170, 70), (215, 50, 45), (90, 90, 90)
CELL_W, CELL_H, BORDER, GAP = 64, 128, 4, 6


def _tile(path: str, colour) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert('RGB').resize((CELL_W, CELL_H), Image.BICUBIC)
    return ImageOps.expand(im, border=BORDER, fill=colour)


def save_ranked_results(distmat: np.ndarray, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord],
                        out_dir: Path, topk: int = 10, max_queries: int = 20) -> List[Path]:
    """One PNG per query: the query, then its top-k gallery images (same identity + same camera removed, as the
    standard protocol does), green where the identity is right and red where it is wrong."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    step = max(1, len(query) // max_queries)
    for qi in list(range(0, len(query), step))[:max_queries]:
        q = query[qi]
        ranked = [gallery[g] for g in np.argsort(distmat[qi], kind='stable')
                  if not (gallery[g].pid == q.pid and gallery[g].camid == q.camid) and gallery[g].pid != -1][:topk]
        width = (CELL_W + 2 * BORDER + GAP) * (len(ranked) + 1) + GAP * 2
        canvas = Image.new('RGB', (width, CELL_H + 2 * BORDER + 30), 'white')
        draw = ImageDraw.Draw(canvas)
        x = GAP
        canvas.paste(_tile(q.path, GREY), (x, 4))
        draw.text((x, CELL_H + 2 * BORDER + 8), f'query {q.pid}', fill='black')
        x += CELL_W + 2 * BORDER + 3 * GAP
        for rank, g in enumerate(ranked, start=1):
            canvas.paste(_tile(g.path, GREEN if g.pid == q.pid else RED), (x, 4))
            draw.text((x, CELL_H + 2 * BORDER + 8), f'{rank}: {g.pid}', fill='black')
            x += CELL_W + 2 * BORDER + GAP
        path = out_dir / f'query_{qi:05d}_{Path(q.path).stem}.png'
        canvas.save(path)
        written.append(path)
    return written


def _axes(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], x_range, y_range, x_label: str, y_label: str,
          title: str):
    left, top, right, bottom = box
    draw.rectangle(box, outline='black')
    for i in range(6):
        y = bottom - (bottom - top) * i / 5
        value = y_range[0] + (y_range[1] - y_range[0]) * i / 5
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((left - 38, y - 6), f'{value:.0f}', fill='black')
        x = left + (right - left) * i / 5
        xv = x_range[0] + (x_range[1] - x_range[0]) * i / 5
        draw.text((x - 8, bottom + 6), f'{xv:.2g}', fill='black')
    draw.text(((left + right) // 2 - 30, bottom + 24), x_label, fill='black')
    draw.text((8, top - 18), y_label, fill='black')
    draw.text(((left + right) // 2 - 60, 6), title, fill='black')

    def to_px(xv: float, yv: float) -> Tuple[float, float]:
        px = left + (xv - x_range[0]) / max(x_range[1] - x_range[0], 1e-9) * (right - left)
        py = bottom - (yv - y_range[0]) / max(y_range[1] - y_range[0], 1e-9) * (bottom - top)
        return px, py
    return to_px


def save_cmc_curve(curves: Dict[str, np.ndarray], path: Path, title: str = 'CMC (standard protocol)') -> Path:
    """CMC curves (fraction matched by rank) of one or more models."""
    image = Image.new('RGB', (640, 420), 'white')
    draw = ImageDraw.Draw(image)
    max_rank = max(len(c) for c in curves.values())
    to_px = _axes(draw, (60, 40, 600, 360), (1, max_rank), (0, 100), 'rank', 'matched %', title)
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    for i, (name, cmc) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        points = [to_px(r + 1, 100 * float(v)) for r, v in enumerate(cmc)]
        draw.line(points, fill=colour, width=2)
        draw.text((420, 300 - 16 * i), f'{name}: R1 {100 * cmc[0]:.1f}', fill=colour)
    image.save(path)
    return Path(path)


def save_scatter(points: Dict[str, Tuple[float, float]], path: Path, x_label: str, y_label: str,
                 title: str) -> Path:
    """Labelled points, e.g. mAP against real GMACs or images/s of pruning configurations."""
    image = Image.new('RGB', (640, 420), 'white')
    draw = ImageDraw.Draw(image)
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.15 or 1, (max(ys) - min(ys)) * 0.2 or 1
    to_px = _axes(draw, (60, 40, 600, 360), (min(xs) - pad_x, max(xs) + pad_x),
                  (min(ys) - pad_y, max(ys) + pad_y), x_label, y_label, title)
    for name, (x, y) in points.items():
        px, py = to_px(x, y)
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(31, 119, 180))
        draw.text((px + 6, py - 6), name, fill='black')
    image.save(path)
    return Path(path)
