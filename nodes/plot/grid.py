"""Drawing: the labelled XY grid and the diff checker's summary chart (Pillow only, no font files).

Sizes follow the cell size so that the same plot is readable at 64-px and at 1024-px cells: the font is a
fixed fraction of the cell's shorter side, clamped to a readable range, and labels wrap to the cell width
(long ones end with an ellipsis after a few lines instead of overlapping their neighbours). Lines break after
spaces, colons and commas, never inside "OUT05:attn2.to_k"; the type shrinks only when a piece would not
fit a line otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...merge_core.plot.plot_labels import fits_without_cuts, wrap_label

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GRID_LINE = (200, 200, 200)
FONT_FRACTION = 1 / 10      # font px per cell px (shorter side)
FONT_MIN, FONT_MAX = 11, 64
MAX_LABEL_LINES = 4
# Bars of the summary chart: mean abs diff, changed fraction.
BAR_COLOURS = ((214, 39, 40), (31, 119, 180))


def font_px(cell_w: int, cell_h: int) -> int:
    return int(max(FONT_MIN, min(FONT_MAX, round(min(cell_w, cell_h) * FONT_FRACTION))))


def _font(size: int):
    return ImageFont.load_default(size=size)


def wrap(text: str, font, width: int, max_lines: int = MAX_LABEL_LINES) -> list[str]:
    """Wrap to `width` px, breaking after spaces, colons and commas (merge_core.plot_labels); a piece wider
    than a line is cut, after a dot or underscore when one fits; an ellipsis marks dropped lines."""
    lines = wrap_label(text, font.getlength, width)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def label_font_px(cell_w: int, cell_h: int, labels) -> int:
    """The font size for a grid: `font_px`, made smaller only when a label would otherwise have to be cut
    inside a piece or lose lines (the last resort; never below FONT_MIN)."""
    size = font_px(cell_w, cell_h)
    while size > FONT_MIN:
        font = _font(size)
        width = cell_w - size // 2
        if all(fits_without_cuts(l, font.getlength, width)
               and len(wrap_label(l, font.getlength, width)) <= MAX_LABEL_LINES for l in labels if l):
            break
        size -= 1
    return size


def _text_block_height(lines, size: int) -> int:
    return len(lines) * int(size * 1.25) + size // 2


def _draw_lines(draw, lines, font, size, box, align="center"):
    """Lines centred in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    line_h = int(size * 1.25)
    top = y0 + max(0, (y1 - y0 - len(lines) * line_h) // 2)
    for i, line in enumerate(lines):
        w = font.getlength(line)
        x = x0 + (x1 - x0 - w) / 2 if align == "center" else x0 + size // 3
        draw.text((x, top + i * line_h), line, fill=INK, font=font)


def to_uint8(image) -> np.ndarray:
    """IMAGE tensor (H, W, C) in 0..1 -> uint8 RGB array, as SaveImage converts it."""
    arr = image.cpu().numpy() if hasattr(image, "cpu") else np.asarray(image)
    return np.clip(255.0 * arr, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class GridLayout:
    cell_w: int
    cell_h: int
    cols: int
    rows: int
    left: int       # width of the row-label column
    top: int        # height of title band + column-label band
    title_h: int
    font: int

    @property
    def size(self) -> tuple[int, int]:
        return self.left + self.cols * self.cell_w, self.top + self.rows * self.cell_h

    def cell_box(self, col: int, row: int) -> tuple[int, int, int, int]:
        x0 = self.left + col * self.cell_w
        y0 = self.top + row * self.cell_h
        return x0, y0, x0 + self.cell_w, y0 + self.cell_h


def layout(cell_w, cell_h, cols, rows, title, x_labels, y_labels) -> GridLayout:
    size = label_font_px(cell_w, cell_h, x_labels)
    font = _font(size)
    has_y = any(y_labels)
    left = max(cell_w, 8 * size) if has_y else 0
    total_w = left + cols * cell_w
    title_h = _text_block_height(wrap(title, font, total_w - size, 3), size) if title else 0
    label_h = max((_text_block_height(wrap(l, font, cell_w - size // 2), size) for l in x_labels if l), default=0)
    return GridLayout(cell_w, cell_h, cols, rows, left, title_h + label_h, title_h, size)


def draw_grid(cells, cols: int, rows: int, x_labels, y_labels, title: str = "") -> tuple[Image.Image, GridLayout]:
    """`cells`: uint8 (H, W, 3) arrays, row-major; labels per column / row (empty strings for no label)."""
    cell_h, cell_w = cells[0].shape[:2]
    lay = layout(cell_w, cell_h, cols, rows, title, x_labels, y_labels)
    img = Image.new("RGB", lay.size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(lay.font)
    if title:
        _draw_lines(draw, wrap(title, font, lay.size[0] - lay.font, 3), font, lay.font,
                    (0, 0, lay.size[0], lay.title_h))
    for c, label in enumerate(x_labels):
        if label:
            x0, _, x1, _ = lay.cell_box(c, 0)
            _draw_lines(draw, wrap(label, font, lay.cell_w - lay.font // 2), font, lay.font,
                        (x0, lay.title_h, x1, lay.top))
    for r, label in enumerate(y_labels):
        if label:
            _, y0, _, y1 = lay.cell_box(0, r)
            lines = wrap(label, font, lay.left - lay.font // 2, max(1, (lay.cell_h // int(lay.font * 1.25))))
            _draw_lines(draw, lines, font, lay.font, (0, y0, lay.left, y1))
    for i, cell in enumerate(cells):
        x0, y0, _, _ = lay.cell_box(i % cols, i // cols)
        img.paste(Image.fromarray(cell), (x0, y0))
    return img, lay


def draw_bar_chart(rows, title: str, series=("mean abs diff", "changed fraction"), width: int = 800) -> Image.Image:
    """Horizontal bars: `rows` = [(label, value1, value2, text1, text2)], already ranked; each series is
    scaled to its own maximum (the numbers are written next to the bars)."""
    size = max(FONT_MIN, width // 50)
    font = _font(size)
    line_h = int(size * 1.4)
    label_w = int(min(width * 0.4, max([font.getlength(r[0]) for r in rows] + [font.getlength("target")]) + size))
    bar_w = width - label_w - size * 9
    row_h = 2 * line_h + size // 2
    title_lines = wrap(title, font, width - size, 3)
    legend_y = len(title_lines) * line_h
    head = legend_y + 2 * line_h
    height = head + max(1, len(rows)) * row_h + size
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(title_lines):
        draw.text((size // 2, size // 3 + i * line_h), line, fill=INK, font=font)
    x = size // 2
    for colour, name in zip(BAR_COLOURS, series):
        draw.rectangle((x, legend_y + 4, x + size, legend_y + 4 + size), fill=colour)
        draw.text((x + size + 4, legend_y + 2), name, fill=INK, font=font)
        x += int(size * 2 + font.getlength(name) + size)
    maxima = [max([abs(r[1 + i]) for r in rows] + [0.0]) or 1.0 for i in range(2)]
    for n, row in enumerate(rows):
        y = head + n * row_h
        label = wrap(row[0], font, label_w - size // 2, 1)[0]
        draw.text((size // 2, y + line_h // 2), label, fill=INK, font=font)
        for i in range(2):
            by = y + i * line_h
            length = int(bar_w * abs(row[1 + i]) / maxima[i])
            draw.rectangle((label_w, by + 2, label_w + max(1, length), by + line_h - 3), fill=BAR_COLOURS[i])
            draw.text((label_w + length + 6, by + 1), row[3 + i], fill=INK, font=font)
        draw.line((0, y + row_h - 2, width, y + row_h - 2), fill=GRID_LINE)
    return img
