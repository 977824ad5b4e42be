"""Before/after zoom of two or more generators on the same held-out masks, at full resolution (no model is run).

Reads the ``comparison.png`` that ``retinasynth evaluate`` writes (rows of mask | rendered | photograph, each
the run's working resolution) for two or more runs evaluated on the same split, and writes one picture: for each
chosen row, a crop of mask | each run in the order given | photograph, enlarged without interpolation so single-pixel
vessels and stripes stay visible.

    python benchmarks/fidelity_zoom.py runs/fidelity/old-test/comparison.png runs/fidelity/new-test/comparison.png \
        --out benchmarks/figures/fidelity_zoom_v2.jpg --rows 0,2 --box 300,120,160
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def _tile(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    side = grid.shape[1] // 3
    return grid[row * side:(row + 1) * side, col * side:(col + 1) * side]


def zoom(grids: list[np.ndarray], rows: list[int], box: tuple[int, int, int], scale: int) -> np.ndarray:
    x, y, s = box
    lines = []
    for r in rows:
        crops = [_tile(grids[0], r, 0), *(_tile(g, r, 1) for g in grids), _tile(grids[0], r, 2)]
        crops = [cv2.resize(c[y:y + s, x:x + s], (s * scale, s * scale), interpolation=cv2.INTER_NEAREST) for c in crops]
        sep = np.full((s * scale, 6, 3), 255, np.uint8)
        lines.append(np.concatenate([v for c in crops for v in (c, sep)][:-1], axis=1))
        lines.append(np.full((6, lines[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(lines[:-1], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("comparisons", nargs="+", metavar="COMPARISON_PNG", help="before, after (and more), in order")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default="0", help="rows of comparison.png (test images in order), e.g. 0,2")
    ap.add_argument("--box", default="300,120,160", help="x,y,side of the crop in working-resolution pixels")
    ap.add_argument("--scale", type=int, default=3)
    a = ap.parse_args()
    grids = [cv2.imread(p) for p in a.comparisons]
    if len(grids) < 2 or any(g is None or g.shape != grids[0].shape for g in grids):
        raise SystemExit("error: give two or more comparison.png files that exist and have the same size (same split "
                         "and run resolution); run `retinasynth evaluate` on every run first.")
    x, y, s = (int(v) for v in a.box.split(","))
    pic = zoom(grids, [int(r) for r in a.rows.split(",")], (x, y, s), a.scale)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    cv2.imwrite(str(tmp), pic, [cv2.IMWRITE_JPEG_QUALITY, 90])
    tmp.replace(out)
    print(f"written {out} ({pic.shape[1]}x{pic.shape[0]}): mask | {' | '.join(a.comparisons)} | photograph")


if __name__ == "__main__":
    main()
