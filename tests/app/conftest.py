"""Fixtures of the page tests (tests/app/)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage


@pytest.fixture
def shown(monkeypatch):
    """The pixels of every picture a page sends (AppTest gives only their media URLs):
    shown(at, caption_start) -> H x W x 3 uint8 of the one image whose caption starts so."""
    sent: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, *args, **kwargs):
        file_id = real(self, data, mimetype, *args, **kwargs)
        sent[file_id] = data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)

    def pixels(at, caption_start: str) -> np.ndarray:
        (url,) = [img.url for element in at.image for img in element.proto.imgs
                  if img.caption.startswith(caption_start)]
        data = sent[url.rsplit("/", 1)[1].split(".")[0]]
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return pixels
