"""`fsmount ui` in a real headless browser (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from .ui_helpers import Lineage, UiServer, make_lineage

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("chromium and chromium-driver are not installed (make test installs them)",
                allow_module_level=True)


@pytest.fixture
def lineage(tmp_path: Path) -> Lineage:
    return make_lineage(tmp_path)


@pytest.fixture
def server(lineage: Lineage, tmp_path: Path) -> Iterator[UiServer]:
    s = UiServer(lineage.store, tmp_path / "cache-ui")
    yield s
    s.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shot(driver: WebDriver, where: Path, name: str) -> Path:
    path = where / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
    return path


def test_tour(browser: WebDriver, server: UiServer, lineage: Lineage, tmp_path: Path) -> None:
    b = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # the datasets page, then a search
    b.get(server.url + "/")
    names = {e.get_attribute("data-name") for e in b.find_elements(By.CSS_SELECTOR, ".dataset")}
    assert names == {"cats", "birds", "cats-and-birds"}
    shot(b, shots, "datasets")
    box = b.find_element(By.ID, "q")
    box.send_keys("birds")
    b.find_element(By.ID, "search-go").click()
    names = {e.get_attribute("data-name") for e in b.find_elements(By.CSS_SELECTOR, ".dataset")}
    assert names == {"birds", "cats-and-birds"}  # 'birds' as a name, and as a part of one

    # the version with two parents: the graph shows every generation and both parents, in merge order
    b.find_element(By.CSS_SELECTOR, '.dataset[data-name="cats-and-birds"] a.version-link').click()
    assert b.find_element(By.ID, "version-id").text == lineage.merged
    nodes = {e.get_attribute("data-id") for e in b.find_elements(By.CSS_SELECTOR, "svg.lineage a.node")}
    assert nodes == {lineage.merged, lineage.child, lineage.extra, lineage.base}
    edges = {(e.get_attribute("data-from"), e.get_attribute("data-to"), e.get_attribute("data-order"))
             for e in b.find_elements(By.CSS_SELECTOR, "svg.lineage path.edge")}
    assert edges == {(lineage.child, lineage.merged, "1"), (lineage.extra, lineage.merged, "2"),
                     (lineage.base, lineage.child, "1")}
    orders = [e.text for e in b.find_elements(By.CSS_SELECTOR, "svg.lineage .order text")]
    assert sorted(orders) == ["1", "2"]
    # drawn left to right: grandparent, parent, version; both parents visible on screen
    x = {n.get_attribute("data-id"): n.rect["x"]
         for n in b.find_elements(By.CSS_SELECTOR, "svg.lineage a.node")}
    assert x[lineage.base] < x[lineage.child] < x[lineage.merged] and x[lineage.extra] < x[lineage.merged]
    for n in b.find_elements(By.CSS_SELECTOR, "svg.lineage a.node"):
        assert n.is_displayed() and n.rect["width"] > 50
    shot(b, shots, "version")
    # click through to the second parent
    b.find_element(By.CSS_SELECTOR, f'svg.lineage a.node[data-id="{lineage.extra}"]').click()
    assert b.find_element(By.ID, "version-id").text == lineage.extra
    assert "birds" in b.title

    # the contents of the grandchild: a directory, then an image preview
    b.get(f"{server.url}/v/{lineage.merged}")
    b.find_element(By.ID, "browse").click()
    b.find_element(By.LINK_TEXT, "images/").click()
    files = [e.text for e in b.find_elements(By.CSS_SELECTOR, "a.file-link")]
    assert files == ["bird.png", "cat.png", "cat2.png", "dog.png"]
    rows = b.find_elements(By.CSS_SELECTOR, "tr.file")
    origins = {r.find_element(By.CSS_SELECTOR, "a.file-link").text:
               r.find_element(By.CSS_SELECTOR, "a.origin").text for r in rows}
    assert origins["bird.png"] == lineage.extra[:12] and origins["cat2.png"] == lineage.child[:12]
    shot(b, shots, "files")
    b.find_element(By.LINK_TEXT, "cat.png").click()
    img = b.find_element(By.ID, "thumb")
    assert b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 64
    assert b.execute_script("return arguments[0].naturalHeight", img) == 48 and img.is_displayed()
    shot(b, shots, "preview")

    # a diff of grandparent and grandchild: the changed files are listed
    b.get(server.url + "/diff")
    b.find_element(By.ID, "diff-a").send_keys(lineage.base)
    b.find_element(By.ID, "diff-b").send_keys("vision/cats-and-birds@2.0")
    b.find_element(By.ID, "diff-go").click()
    added = [e.text for e in b.find_elements(By.CSS_SELECTOR, "#changed li")]
    assert added == ["README.md", "images/bird.png", "images/cat2.png", "tables/birds.csv"]
    assert b.find_element(By.ID, "count-modified").text == "1"
    assert b.find_element(By.ID, "count-removed").text == "1"
    shot(b, shots, "diff")
    b.find_element(By.CSS_SELECTOR, "a.count-modified").click()
    assert [e.text for e in b.find_elements(By.CSS_SELECTOR, "#changed li")] == ["notes.txt"]
    b.find_element(By.CSS_SELECTOR, "a.count-removed").click()
    assert [e.text for e in b.find_elements(By.CSS_SELECTOR, "#changed li")] == ["blob.bin"]


def test_unknown_page_in_the_browser(browser: WebDriver, server: UiServer) -> None:
    browser.get(server.url + "/v/" + "f" * 32)
    assert browser.find_element(By.CSS_SELECTOR, "h1.error-title").text == "Not found"
