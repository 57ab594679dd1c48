"""Cone sprites cut from the web cone photos (orange regions, filled row by row so the white
bands count) and pasted onto street frames without roadwork: synthetic positives in every
street domain, so that a head cannot learn 'this camera means roadwork'. numpy + PIL only."""
import random
from collections import deque

import numpy as np
from PIL import Image, ImageFilter


def orange_mask(img, side=200):
    small = img.copy()
    small.thumbnail((side, side))
    hsv = np.array(small.convert("HSV")).astype(np.int32)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    m = ((h >= 3) & (h <= 22)) & (s >= 150) & (v >= 130)
    return m, small.size


def components(m):
    H, W = m.shape
    lab = np.zeros((H, W), np.int32)
    out = []
    n = 0
    for y0, x0 in zip(*np.nonzero(m)):
        if lab[y0, x0]:
            continue
        n += 1
        q = deque([(y0, x0)])
        lab[y0, x0] = n
        pts = []
        while q:
            y, x = q.popleft()
            pts.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < H and 0 <= xx < W and m[yy, xx] and not lab[yy, xx]:
                    lab[yy, xx] = n
                    q.append((yy, xx))
        out.append(np.array(pts))
    return out


def sprites_of(path):
    img = Image.open(path).convert("RGB")
    m, (sw, sh) = orange_mask(img)
    sx, sy = img.width / sw, img.height / sh
    res = []
    for pts in components(m):
        if len(pts) < 0.004 * m.size:
            continue
        y0, x0 = pts.min(0)
        y1, x1 = pts.max(0)
        bh, bw = y1 - y0 + 1, x1 - x0 + 1
        if bh < 12 or not (0.7 <= bh / bw <= 5):
            continue
        fill = np.zeros((bh, bw), bool)
        for y in range(bh):
            xs = pts[pts[:, 0] == y + y0][:, 1]
            if len(xs):
                fill[y, xs.min() - x0: xs.max() - x0 + 1] = True
        ratio = fill.mean()
        if not (0.3 <= ratio <= 0.9):
            continue
        box = (int(x0 * sx), int(y0 * sy), int((x1 + 1) * sx), int((y1 + 1) * sy))
        crop = img.crop(box)
        alpha = Image.fromarray((fill * 255).astype(np.uint8)).resize(crop.size, Image.NEAREST)
        alpha = alpha.filter(ImageFilter.GaussianBlur(1))
        res.append((crop, alpha))
    return res


def paste(bg, sprites, rng):
    """1-4 cones in a loose row on the lower part of the frame, nearer ones larger, lit like
    the spot they stand on."""
    img = bg.convert("RGB").copy()
    W, H = img.size
    k = rng.randint(1, 4)
    y_base = rng.uniform(0.6, 0.95)
    x = rng.uniform(0.1, 0.8)
    step = rng.uniform(0.05, 0.15) * rng.choice([-1, 1])
    arr = np.asarray(img).astype(np.float32)
    for i in range(k):
        crop, alpha = rng.choice(sprites)
        yb = min(0.98, y_base + rng.uniform(-0.03, 0.03) - 0.03 * i)
        hgt = H * (0.06 + 0.22 * (yb - 0.55) / 0.45) * rng.uniform(0.7, 1.3)
        hgt = max(8, int(hgt))
        wid = max(4, int(crop.width * hgt / crop.height))
        c = crop.resize((wid, hgt), Image.BILINEAR)
        a = alpha.resize((wid, hgt), Image.BILINEAR)
        cx = int((x + step * i) * W)
        top = int(yb * H) - hgt
        left = cx - wid // 2
        if left < 0 or top < 0 or left + wid > W or top + hgt > H:
            continue
        patch = arr[top:top + hgt, left:left + wid]
        ca = np.asarray(c).astype(np.float32)
        am = np.asarray(a).astype(np.float32)[..., None] / 255.0
        # light the cone like its surroundings (night frames get dark cones)
        ratio = np.clip((patch.mean() + 1) / (ca[am[..., 0] > 0.5].mean() + 1 if (am > 0.5).any() else 1), 0.3, 1.2)
        ca = np.clip(ca * ratio, 0, 255)
        arr[top:top + hgt, left:left + wid] = patch * (1 - am) + ca * am
    return Image.fromarray(arr.astype(np.uint8))
