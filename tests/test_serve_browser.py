"""`mmal serve` in real Chromium (Debian's chromium + chromium-driver, driven by selenium):
label 5 items with the keyboard, undo one, label it again; state.sqlite holds exactly those
labels with provenance. The data-set view: filter, open an item from the embedding map, then
relabel a suspect label; state.sqlite holds the new label."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest

from serve_support import NAMES, build_workspace, scored_pool, server

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")]


def chromium_driver(width=1280, height=900):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
              "--autoplay-policy=user-gesture-required", "--mute-audio"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(fn, timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_label_five_with_keyboard_undo_relabel(tmp_path, media_dir):
    from selenium.webdriver.common.by import By

    ws = build_workspace(tmp_path, n_pool=10, n_batch=7, media_dir=media_dir)
    con = sqlite3.connect(ws / "state.sqlite")
    order = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank")]
    con.close()
    keys = ["2", "1", "3", "2", "1"]  # classes dog, cat, car, dog, cat for the first five cards
    with server(ws) as (proc, base, _):
        drv = chromium_driver()
        try:
            drv.get(base + "/")
            _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1'"))
            cards = drv.find_elements(By.CSS_SELECTOR, ".card")
            assert len(cards) == 7
            # the page shows the model's prediction, why each item was picked, media, the LSB seed
            text = drv.find_element(By.TAG_NAME, "body").text
            assert "picked by entropy" in text and "picked by lsb-knn" in text and "neighbour of seed bad case" in text
            assert "model: " in text and "0 of 7 labeled" in text
            assert drv.find_elements(By.CSS_SELECTOR, "audio[src^='/media/']")
            imgs = drv.find_elements(By.CSS_SELECTOR, "img.media")
            assert imgs and all(drv.execute_script("return arguments[0].naturalWidth", im) > 0 for im in imgs)
            ann = drv.find_element(By.ID, "annotator")
            ann.clear()
            ann.send_keys("alice")
            drv.find_element(By.TAG_NAME, "h1").click()  # leave the input: keys now go to the page
            body = drv.find_element(By.TAG_NAME, "body")
            for k in keys:
                body.send_keys(k)
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && document.body.dataset.labeled === '5'"))
            assert "5 of 7 labeled" in drv.find_element(By.ID, "progress").text
            body.send_keys("u")  # undo the fifth label; the current card goes back to it
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && document.body.dataset.labeled === '4'"))
            con = sqlite3.connect(ws / "state.sqlite")
            assert order[4] not in {r[0] for r in con.execute("SELECT item_id FROM labels WHERE round = 1")}
            con.close()
            body.send_keys("3")  # label it again, as car this time
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && document.body.dataset.labeled === '5'"))
            chosen = drv.find_element(By.ID, "card-4").find_element(By.CSS_SELECTOR, ".lab.chosen").get_attribute("data-name")
            assert chosen == "car"
            assert drv.find_element(By.ID, "status").text == ""
        finally:
            drv.quit()
    con = sqlite3.connect(ws / "state.sqlite")
    rows = con.execute("SELECT item_id, label, source, annotator FROM labels WHERE round = 1 ORDER BY item_id").fetchall()
    con.close()
    want = [int(k) - 1 for k in keys[:4]] + [NAMES.index("car")]
    assert rows == sorted((order[i], want[i], "serve", "alice") for i in range(5))


def test_token_mode_page_works_in_chromium(tmp_path, media_dir):
    """Non-loopback bind: the printed ?token= URL opens the page (cookie), keys label items."""
    from selenium.webdriver.common.by import By

    ws = build_workspace(tmp_path, n_pool=4, n_batch=3, media_dir=media_dir)
    with server(ws, "--host", "0.0.0.0", "--annotator", "bob") as (proc, base, token):
        drv = chromium_driver()
        try:
            drv.get(base + "/")
            assert "token required" in drv.find_element(By.TAG_NAME, "body").text
            drv.get(f"{base}/?token={token}")
            _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1'"))
            assert "?token" not in drv.current_url  # redirected: the token does not stay in the address bar
            imgs = drv.find_elements(By.CSS_SELECTOR, "img.media")
            assert imgs and all(drv.execute_script("return arguments[0].naturalWidth", im) > 0 for im in imgs)
            drv.find_element(By.TAG_NAME, "body").send_keys("3")
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && document.body.dataset.labeled === '1'"))
        finally:
            drv.quit()
    con = sqlite3.connect(ws / "state.sqlite")
    rows = con.execute("SELECT item_id, label, source, annotator FROM labels WHERE round = 1").fetchall()
    first = con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank LIMIT 1").fetchone()[0]
    con.close()
    assert rows == [(first, 2, "serve", "bob")]


def test_dataset_view_filter_map_and_relabel_a_suspect(tmp_path, media_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from mmal.workspace import Workspace, state

    ws = build_workspace(tmp_path, n_pool=20, n_batch=6, media_dir=media_dir)
    w = Workspace(ws)
    con = sqlite3.connect(ws / "state.sqlite")
    b1 = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank")]
    con.close()
    state.put_labels(w, [(k, 1, j % 3) for j, k in enumerate(b1[:4])], source="test")
    scored_pool(ws, 1, seed=7, labeled_at_scoring=w.current_labels())
    dogs = sorted(k for k, v in w.current_labels().items() if v == NAMES.index("dog"))
    with server(ws) as (proc, base, _):
        drv = chromium_driver(1400, 1000)
        try:
            drv.get(base + "/dataset")
            _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1'"))
            assert drv.execute_script("return document.getElementById('map').dataset.ready") == "1"
            assert all(n in drv.find_element(By.ID, "legend").text for n in NAMES)
            Select(drv.find_element(By.NAME, "label")).select_by_visible_text("dog")
            drv.find_element(By.ID, "apply").click()
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && "
                                             f"document.body.dataset.total === '{len(dogs)}'"))
            rows = drv.find_elements(By.CSS_SELECTOR, "#items tbody tr")
            assert sorted(r.get_attribute("data-item") for r in rows) == dogs
            assert {r.find_element(By.CSS_SELECTOR, ".lab-name").text for r in rows} == {"dog"}
            assert "label=dog" in drv.current_url  # the filter is in the address, so it can be linked
            # a click on an item's point in the map opens that item
            target = dogs[0]
            x, y = drv.execute_script("return window.mmalMap.pixelOf(arguments[0])", target)
            canvas = drv.find_element(By.ID, "map")
            ActionChains(drv).move_to_element_with_offset(canvas, int(x - 280), int(y - 220)).click().perform()
            _wait(lambda: drv.find_element(By.ID, "detail").get_attribute("data-item") == target)
            assert drv.find_element(By.ID, "d-id").text == target
            # the suspect view: relabel the top suspect with the class the model says
            drv.find_element(By.LINK_TEXT, "suspect labels").click()
            _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1'"))
            ann = drv.find_element(By.ID, "annotator")
            ann.clear()
            ann.send_keys("carol")
            rows = drv.find_elements(By.CSS_SELECTOR, "#suspects tbody tr")
            assert any("gold test label" in r.text for r in rows)  # held-out test items are shown, not relabeled
            first = next(r for r in rows if r.find_elements(By.CSS_SELECTOR, ".lab.suggested"))
            item = first.get_attribute("data-item")
            button = first.find_element(By.CSS_SELECTOR, ".lab.suggested")
            new = button.get_attribute("data-name")
            assert new != first.find_element(By.CSS_SELECTOR, ".lab-name").text
            button.click()
            _wait(lambda: "done" in first.get_attribute("class"))
            assert first.find_element(By.CSS_SELECTOR, ".lab-name").text == new
            assert drv.find_element(By.ID, "status").text == "" or "gold" in drv.find_element(By.ID, "status").text
        finally:
            drv.quit()
    assert Workspace(ws).current_labels()[item] == NAMES.index(new)
    con = sqlite3.connect(ws / "state.sqlite")
    row = con.execute("SELECT round, source, annotator FROM labels WHERE item_id = ? ORDER BY round DESC LIMIT 1", (item,)).fetchone()
    con.close()
    assert row == (1, "serve", "carol")
