"""Contact sheets: rows of equally wide image tiles under a header of column names."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HEADER_PX = 18


def save_contact_sheet(rows: list[list[Image.Image]], columns: list[str], tile_width: int,
                       path: str | Path) -> Path:
    """Paste ``rows`` (each one tile per column, tiles of a row equally high) under the
    column names and write the PNG."""
    sheet = Image.new("RGB", (tile_width * len(columns),
                              HEADER_PX + sum(row[0].height for row in rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for column, name in enumerate(columns):
        draw.text((column * tile_width + 4, 3), name, fill="black")
    top = HEADER_PX
    for row in rows:
        for column, tile in enumerate(row):
            sheet.paste(tile, (column * tile_width, top))
        top += row[0].height
    path = Path(path)
    sheet.save(path)
    return path
