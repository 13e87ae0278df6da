"""Charts drawn under LIMA_HOME, handed to the page as images.

Gradio serves files only from its working directory and the temp folder, and the state folder
(``~/.lima-studio`` by default) is neither: a chart returned as a path there fails the whole
event. Returned as an image, Gradio writes its own copy where it serves from.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def image(path: str | Path | None) -> Image.Image | None:
    """The PNG at ``path`` as an image for a ``gr.Image`` output (None stays None)."""
    if path is None:
        return None
    with Image.open(path) as opened:
        return opened.copy()  # read now: the file may be redrawn while the page fetches it
