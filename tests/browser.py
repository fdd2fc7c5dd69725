"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: both paths are given, so Selenium Manager has nothing to fetch. In CI a
missing Chromium fails the test (``integration_tool``), elsewhere it skips.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import integration_tool

CHROMIUM = "/usr/lib/chromium/chromium"  # the binary itself: /usr/bin/chromium is a noisy wrapper
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1600",
]


@contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A fresh headless Chromium (its own profile folder); quit on exit."""
    driver_path = integration_tool("chromedriver")
    if not Path(CHROMIUM).exists():
        integration_tool("chromium")  # fails in CI, skips elsewhere, with the install hint
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.accept_insecure_certs = True  # the node's test certificate is self-signed
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def rgb(png: bytes) -> np.ndarray:
    """The pixels of a PNG as an RGB array."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
