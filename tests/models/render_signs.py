"""Renders the road-sign images the OCR and keyword tests read (Pillow's built-in scalable
font, no files from outside): validator-sized 224x224 JPEGs, quality 75.

Usage: python render_signs.py OUT_DIR
"""

import os
import sys

from PIL import Image, ImageDraw, ImageFont

SIGNS = {
    # name: (lines, sign colour)
    "road_work_ahead": (["ROAD", "WORK", "AHEAD"], (255, 140, 0)),
    "end_road_work": (["END", "ROAD WORK"], (255, 140, 0)),
    "road_work_ends": (["ROAD WORK", "ENDS"], (255, 140, 0)),
    "workers_ahead": (["WORKERS", "AHEAD"], (255, 140, 0)),
    "road_closed": (["ROAD", "CLOSED"], (250, 250, 250)),
    "baustelle": (["BAUSTELLE"], (255, 220, 0)),
    "speed_limit": (["SPEED", "LIMIT", "55"], (250, 250, 250)),
}


def render(lines, colour, size=224, font_size=30):
    im = Image.new("RGB", (size, size), (110, 120, 110))
    d = ImageDraw.Draw(im)
    d.rectangle([12, 40, size - 12, size - 40], fill=colour, outline=(20, 20, 20), width=3)
    font = ImageFont.load_default(size=font_size)
    total = len(lines) * (font_size + 8)
    y = (size - total) / 2
    for line in lines:
        w = d.textlength(line, font=font)
        d.text(((size - w) / 2, y), line, fill=(10, 10, 10), font=font)
        y += font_size + 8
    return im


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (lines, colour) in SIGNS.items():
        render(lines, colour).save(os.path.join(out, name + ".jpg"), quality=75)


if __name__ == "__main__":
    main()
