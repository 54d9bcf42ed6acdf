"""Shared fixtures."""

from __future__ import annotations

import pytest
from PIL import Image

from helpers import photos


@pytest.fixture(scope="session")
def photo_images() -> list[Image.Image]:
    return photos()
