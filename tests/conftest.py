"""Shared fixtures, the network guard, and the ``slow`` mark of end-to-end modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import netguard
from helpers import photos

# Whole CLI runs, killed builds and simulated review loops: `make quick` leaves them out,
# `make test` (and CI) runs them all.
SLOW_MODULES = {
    "test_cli",
    "test_demo",
    "test_kill_resume",
    "test_supervision_loop",
    "test_backends_pipeline",
}

_SITE = str(Path(__file__).resolve().parent / "netguard_site")


def pytest_configure(config: pytest.Config) -> None:
    netguard.install()
    parts = [_SITE, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def photo_images() -> list[Image.Image]:
    return photos()
