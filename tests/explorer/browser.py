"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium, with the
browser console captured, bounded waits and checked screenshots."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 30  # every wait is bounded
SCREENSHOTS = Path(
    os.environ.get(
        "EXPLORER_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "explorer-screenshots"
    )
)


# Every host name but the test servers' resolves to nothing: a page that reaches for a CDN fails.
NO_NETWORK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"


@contextmanager
def chromium(*flags: str) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):  # fail, not skip
        pytest.fail("The explorer tests need apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--allow-file-access-from-files",
        *flags,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


def wait_rendered(driver: Any, page: str, timeout: float = WAIT_S) -> None:
    """Until the explorer says it has drawn `page` (body[data-rendered]); an error page fails."""
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d: Any) -> bool:
        state = d.execute_script("return document.body.dataset.rendered || ''")
        if state == "error":
            raise AssertionError("the explorer showed an error: " + d.find_element("id", "main").text)
        return bool(state == page)

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(done)


def wait_for(driver: Any, script: str, timeout: float = WAIT_S) -> Any:
    """Until the JavaScript expression `script` is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script("return " + script)
    )


def thumbs_loaded(driver: Any, timeout: float = WAIT_S) -> int:
    """Wait until every thumbnail on the page has painted; returns how many there are."""
    return int(
        wait_for(
            driver,
            "(() => { const i = [...document.querySelectorAll('.thumb img')];"
            " return i.every(x => x.complete && x.naturalWidth > 0) ? i.length || -1 : 0; })()",
            timeout,
        )
    )


def typical_loaded(driver: Any, scope: str = "", timeout: float = WAIT_S) -> int:
    """Wait until the tree's typical-image thumbnails (under `scope`) have painted; their count."""
    return int(
        wait_for(
            driver,
            f"(() => {{ const i = [...document.querySelectorAll('{scope} .typical img')];"
            " return i.every(x => x.complete && x.naturalWidth > 0) ? i.length || -1 : 0; })()",
            timeout,
        )
    )


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Image.Image:
    """Save the page as SCREENSHOTS/name.png and check it shows something: the window's size and
    more than a blank page's colours."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    data = driver.get_screenshot_as_png()
    (SCREENSHOTS / f"{name}.png").write_bytes(data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.width >= 1000 and image.height >= 600, image.size
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20, f"{name}: a blank page"
    return image


def region_is_picture(image: Image.Image, driver: Any, css: str) -> bool:
    """Whether the first element matching `css` shows a picture in the screenshot: its pixels
    vary (a thumbnail), where a missing image is a flat box."""
    rect = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom, window.devicePixelRatio]",
        css,
    )
    scale = rect[4]
    box = tuple(int(v * scale) for v in rect[:4])
    crop = image.crop(box)
    return crop.width > 20 and max(ImageStat.Stat(crop).stddev) > 8
