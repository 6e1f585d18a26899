"""The built book, opened in a real browser (headless Debian chromium driven by Playwright).

Every page of the table of contents: loads with no console errors, every image loads, every internal link resolves
to a file of the build, and a full-page screenshot is written to ``_build/screenshots/`` for review. The landing
page's headline chart must be visible. ``make test`` builds the book (replay) before pytest runs; run alone, this
module builds it if ``_build/html`` is missing.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def toc_pages() -> list:
    """Page paths (relative to _build/html) of every file in _toc.yml, landing page first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return [f + ".html" for f in files]


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--mode", "replay"], cwd=ROOT,
                       check=True)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.fail("chromium is not installed: `make test` installs it with apt (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def test_every_toc_page_was_built():
    missing = [p for p in toc_pages() if not (HTML / p).exists()] if HTML.exists() else ["(no build)"]
    assert not missing, f"pages in _toc.yml missing from _build/html: {missing}"


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_browser(site, browser, page):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    failed_requests = []
    pg.on("requestfailed", lambda r: failed_requests.append(r.url) if r.url.startswith(site) else None)
    resp = pg.goto(site + page, wait_until="load")
    assert resp is not None and resp.status == 200, f"{page}: HTTP {resp.status if resp else 'no response'}"

    # every image loaded (complete and with pixels)
    broken = pg.eval_on_selector_all("img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0))"
                                            ".map(e => e.getAttribute('src'))")
    assert not broken, f"{page}: images that did not load: {broken}"

    # every internal link resolves to a file of the build
    hrefs = pg.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    dead = []
    for href in hrefs:
        url = urlparse(urljoin(site + page, href))
        if not (site + page).startswith(f"{url.scheme}://{url.netloc}") or url.scheme not in ("http", "https"):
            continue   # external or mailto/javascript
        target = HTML / unquote(url.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            dead.append(href)
    assert not dead, f"{page}: internal links to nothing: {sorted(set(dead))}"

    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / (page.replace("/", "__").replace(".html", ".png"))), full_page=True)
    ctx.close()
    assert not failed_requests, f"{page}: requests that failed: {failed_requests}"
    assert not errors, f"{page}: " + "\n".join(errors)


def test_landing_chart_visible(site, browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.goto(site + toc_pages()[0], wait_until="load")
    chart = pg.locator("img[src*='headline']")
    assert chart.count() >= 1, "the landing page has no headline chart"
    assert chart.first.is_visible()
    box = chart.first.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, f"headline chart too small: {box}"
    pg.close()
