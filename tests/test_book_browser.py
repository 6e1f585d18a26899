"""The built book, opened in a real browser (headless Debian chromium driven by Playwright), checked for what a
reader sees.

Every page of the table of contents: loads with no console errors, every image loads, every internal link resolves
to a file of the build, and a full-page screenshot is written to ``_build/screenshots/`` for review. Then:

* every chapter page shows the charts its chapter writes — each name in the chapter package's ``FIGURES`` as an
  ``img[data-figure=<name>]`` with a non-zero natural width (the list comes from the chapter, not from this file);
* no table, figure or image runs past the article's content column at 1280 px (every dropdown opened);
* no table cell reads ``NaN``, ``None``, ``nan`` or a Python tuple;
* no chapter page shows the Python source of a narrative or parameters cell (``book.md(``, ``mode = "auto"``);
* the landing page names the build's GPU, and the numbers of its headline equal those of the record it links;
* the site loads the book's stylesheet (``_static/flashcore.css``).

The site is ``_build/html`` (``make test`` builds it in replay mode first), or ``$FLASHCORE_BOOK_HTML``: point it at
another build, e.g. the book as it was at an older commit, to see these tests fail there.
"""
from __future__ import annotations

import functools
import http.server
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("FLASHCORE_BOOK_HTML") or ROOT / "_build" / "html")
SHOTS = HTML.parent / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280
STUB_CLASS = "flashcore-stub"             # scripts/build_book.py: a chapter with no record on the book's GPU
BOOK_GPU_CLASS = "flashcore-book-gpu"     # scripts/build_book.py: the landing page's statement of the GPU


# ------------------------------------------------------------------------------------------------ the pages
def toc_files() -> list:
    """Every file in _toc.yml (without extension), landing page first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def toc_pages() -> list:
    return [f + ".html" for f in toc_files()]


def chapter_pages() -> list:
    """(notebook stem, page) of every executed notebook in the table of contents."""
    return [(Path(f).name, f + ".html") for f in toc_files() if f.startswith("book/chapters/")]


def page_package(stem: str):
    """The package under flashcore/chapters/ whose NOTEBOOK is ``stem`` (the chapters of CHAPTERS and pages such
    as the GPU comparison, which reads records but is no chapter)."""
    import flashcore.chapters as chapters

    for info in pkgutil.iter_modules(chapters.__path__):
        if not info.ispkg:
            continue
        mod = importlib.import_module(f"flashcore.chapters.{info.name}")
        if getattr(mod, "NOTEBOOK", None) == stem:
            return mod
    return None


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        if os.environ.get("FLASHCORE_BOOK_HTML"):
            pytest.fail(f"$FLASHCORE_BOOK_HTML={HTML} has no index.html")
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--mode", "replay"], cwd=ROOT,
                       check=True)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


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


@pytest.fixture
def open_page(site, browser):
    """open_page(page) → a loaded Playwright page at 1280 px; closed after the test."""
    contexts = []

    def _open(page: str):
        if not (HTML / page).exists():
            pytest.fail(f"{page} is not in the build ({HTML})")
        ctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.goto(site + page, wait_until="load")
        return pg

    yield _open
    for ctx in contexts:
        ctx.close()


def _is_stub(pg) -> bool:
    return pg.locator(f".{STUB_CLASS}").count() > 0


# ------------------------------------------------------------------------------------------- every page
def test_every_toc_page_was_built():
    missing = [p for p in toc_pages() if not (HTML / p).exists()] if HTML.exists() else ["(no build)"]
    assert not missing, f"pages in _toc.yml missing from {HTML}: {missing}"


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_browser(site, browser, page):
    ctx = browser.new_context(viewport={"width": WIDTH, "height": 900})
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
                                            ".map(e => (e.getAttribute('src') || '').slice(0, 80))")
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


def test_book_stylesheet_is_loaded(open_page):
    """Jupyter Book 1.x links every .css under _static/ (html_css_files); the table rules must reach the page."""
    pg = open_page(toc_pages()[0])
    hrefs = pg.eval_on_selector_all("link[rel=stylesheet]", "els => els.map(e => e.getAttribute('href'))")
    assert any(h and "flashcore.css" in h for h in hrefs), f"_static/flashcore.css is not linked: {hrefs}"
    applied = pg.evaluate("""() => { const t = document.createElement('table'); t.className = 'flashcore-table';
        document.querySelector('article').appendChild(t); return getComputedStyle(t).borderCollapse; }""")
    assert applied == "collapse", f"flashcore.css is linked but its rules do not apply (border-collapse {applied})"


# ------------------------------------------------------------------------------------- charts on the page
@pytest.mark.parametrize("stem,page", chapter_pages())
def test_chapter_shows_every_chart_it_writes(open_page, stem, page):
    pkg = page_package(stem)
    assert pkg is not None, f"no package under flashcore/chapters/ declares NOTEBOOK = {stem!r}"
    figures = getattr(pkg, "FIGURES", None)
    assert figures, f"{pkg.__name__} declares no FIGURES (the charts its page shows)"
    pg = open_page(page)
    if _is_stub(pg):
        pytest.skip(f"{page} is a stub: the book's GPU has no record of this chapter (the page says so)")
    shown = pg.eval_on_selector_all(
        "img[data-figure]", "els => els.map(e => ({name: e.dataset.figure, complete: e.complete, "
                            "width: e.naturalWidth, height: e.naturalHeight}))")
    by_name = {s["name"]: s for s in shown}
    missing = [f for f in figures if f not in by_name]
    empty = [f for f in figures if f in by_name and not (by_name[f]["complete"] and by_name[f]["width"] > 0
                                                         and by_name[f]["height"] > 0)]
    assert not missing, (f"{page}: {len(missing)} of the {len(figures)} charts {pkg.__name__}.FIGURES names are not "
                         f"on the page: {missing} (the page shows {sorted(by_name) or 'no chart at all'})")
    assert not empty, f"{page}: charts on the page with no pixels: {empty}"


# ------------------------------------------------------------------------------------------- the layout
OVERFLOW_JS = """() => {
  document.querySelectorAll('details').forEach(d => d.open = true);   // what a reader can open, too
  const art = document.querySelector('article.bd-article') || document.querySelector('main');
  const a = art.getBoundingClientRect();
  const bad = [];
  for (const el of art.querySelectorAll('table, figure, img')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > a.right + 1 || r.left < a.left - 1)
      bad.push({tag: el.tagName.toLowerCase(), what: (el.dataset.figure || el.id || el.className || '').slice(0, 40),
                left: Math.round(r.left), right: Math.round(r.right),
                text: (el.innerText || el.alt || '').replace(/\\s+/g, ' ').slice(0, 60)});
  }
  return {left: Math.round(a.left), right: Math.round(a.right), bad};
}"""


@pytest.mark.parametrize("page", toc_pages())
def test_nothing_overflows_the_content_column(open_page, page):
    pg = open_page(page)
    got = pg.evaluate(OVERFLOW_JS)
    bad = got["bad"]
    assert not bad, (f"{page}: {len(bad)} element(s) run past the content column (x {got['left']}–{got['right']} px "
                     f"at {WIDTH} px): " + "; ".join(f"{b['tag']} {b['what']!r} spans {b['left']}–{b['right']} "
                                                      f"({b['text']!r})" for b in bad[:6]))


# ------------------------------------------------------------------------------------------- the tables
# A missing value printed as such (the whole cell, a bound of a range, a value with a unit), or a Python tuple.
# Prose that names NaN ("NaN/Inf propagation") is fine.
BAD_CELL = re.compile(r"^(nan|none|NaN|None|NaT|<NA>)$|(NaN|None|nan)\s*[–-]|[–-]\s*(NaN|None|nan)\b"
                      r"|\b(NaN|None|nan)\s*(µs|%|×|TFLOP)|^\(\s*[-\d.'\"]+\s*,.*\)$")


@pytest.mark.parametrize("page", toc_pages())
def test_no_nan_none_or_tuples_in_tables(open_page, page):
    pg = open_page(page)
    cells = pg.eval_on_selector_all("article td, article th",
                                    "els => els.map(e => e.innerText.trim())")
    bad = sorted({c for c in cells if BAD_CELL.search(c)})
    assert not bad, f"{page}: table cells a reader should never see: {bad[:12]}"


# -------------------------------------------------------------------------------------- the Python source
NARRATIVE_SOURCE = ("book.md(", "book.table(", "md(f'''", 'md(f"""', "mode = \"auto\"", "mode = \"replay\"",
                    "mode = 'auto'", "device = None")


@pytest.mark.parametrize("stem,page", chapter_pages())
def test_no_narrative_or_parameters_source_shown(open_page, stem, page):
    pg = open_page(page)
    inputs = pg.eval_on_selector_all(
        "article div.cell", "els => els.map(e => ({tags: e.className, source: (e.querySelector('.cell_input') || "
                            "{innerText: ''}).innerText}))")
    shown = [c for c in inputs if c["source"].strip()]
    params = [c for c in shown if "tag_parameters" in c["tags"] or "tag_injected-parameters" in c["tags"]]
    assert not params, f"{page}: the parameters cell's source is on the page: {params[0]['source'][:120]!r}"
    text = pg.inner_text("article")
    hits = [s for s in NARRATIVE_SOURCE if s in text]
    assert not hits, f"{page}: Python source of narrative cells is on the page ({hits})"


# ------------------------------------------------------------------------------------- the landing page
NUM = r"(\d+(?:\.\d+)?)"
WORD_MULTIPLE = re.compile(r"\b((?:two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|forty|fifty|sixty|"
                           r"seventy|eighty|ninety|a hundred|hundred|thousand)\s+times)\b", re.I)


def _close(shown: str, value: float) -> bool:
    """Does ``value`` print as ``shown`` at the precision ``shown`` has (6.57 ↔ 6.5712, 1590 ↔ 1590.39)?"""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-9


def _record_rows(rec: dict) -> list:
    rows = [r for r in rec.get("results", []) if isinstance(r.get("median_us"), (int, float))]
    rows += [r for r in rec.get("extra", {}).get("sweep", []) or [] if isinstance(r.get("median_us"), (int, float))]
    return rows


def _linked_records(pg, site: str, page: str) -> list:
    """Every run.json the page links, parsed (the {download} links point at copies in the build)."""
    out = []
    for href in pg.eval_on_selector_all("article a[href$='run.json']", "els => els.map(e => e.getAttribute('href'))"):
        path = HTML / unquote(urlparse(urljoin(site + page, href)).path).lstrip("/")
        if path.exists():
            out.append(json.loads(path.read_text()))
    return out


def test_landing_page_numbers_equal_its_record(open_page, site):
    """Every check runs and every problem is reported together (one list), so a failure shows all of them."""
    page = toc_pages()[0]
    pg = open_page(page)
    text = pg.inner_text("article")
    recs = _linked_records(pg, site, page)
    results = [r for r in recs if r.get("provenance", {}).get("notebook") == "04_results"]
    assert results, f"{page} links no chapter-4 record (its headline's source): links {len(recs)} record(s)"
    rec = results[0]
    rows = _record_rows(rec)
    problems = []

    # every µs value is a time of the record (or the gap between two of its times at one shape), and a median
    # quoted with its p10–p90 range comes from ONE row
    micro = re.findall(NUM + r"\s*µs", text)
    if not micro:
        problems.append("no time in µs on the landing page")
    times = [v for r in rows for v in (r["median_us"], r.get("p10_us"), r.get("p90_us")) if v is not None]
    gaps = []
    for shape in {(r["B"], r["H"], r["S"]) for r in rows}:
        at = [v for r in rows if (r["B"], r["H"], r["S"]) == shape
              for v in (r["median_us"], r.get("p10_us"), r.get("p90_us")) if v is not None]
        gaps += [abs(x - y) for x in at for y in at]
    strays = [m for m in micro if not any(_close(m, v) for v in times) and not any(_close(m, g) for g in gaps)]
    if strays:
        problems.append(f"times that are in no row of record {rec['run_id']}: {strays}")
    for med, lo, hi in re.findall(NUM + r"\s*µs[^0-9µ]{0,30}?p10[–-]p90\s+" + NUM + r"\s*[–-]\s*" + NUM, text):
        same_row = [r for r in rows if _close(med, r["median_us"]) and _close(lo, r.get("p10_us") or -1)
                    and _close(hi, r.get("p90_us") or -1)]
        if not same_row:
            problems.append(f"'{med} µs … p10–p90 {lo}–{hi}': no row of {rec['run_id']} has this median with this "
                            f"range (a median beside another kernel's range?)")

    # every ratio is the ratio of two numbers of the record at one shape (times or throughputs)
    by_shape: dict = {}
    for r in rows:
        by_shape.setdefault((r["B"], r["H"], r["S"]), []).append(r)
    pairs = []
    for group in by_shape.values():
        for key in ("median_us", "tflops"):
            vals = [r[key] for r in group if isinstance(r.get(key), (int, float)) and r[key] > 0]
            pairs += [x / y for x in vals for y in vals]
    shown = [x for pair in re.findall(NUM + r"(?:\s*[–-]\s*" + NUM + r")?\s*×", text) for x in pair if x]
    unbacked = [x for x in shown if not any(_close(x, q) for q in pairs)]
    if unbacked:
        problems.append(f"ratios that are no ratio of two numbers of {rec['run_id']} at one shape: {unbacked}")

    # every shape it names is a shape of the record
    shapes = {(r["B"], r["H"], r["S"]) for r in rows}
    for b, h, s in re.findall(r"\bB\s?=?\s?(\d+),?\s+H\s?=?\s?(\d+),?\s+S\s?=?\s?(\d+)", text):
        if (int(b), int(h), int(s)) not in shapes:
            problems.append(f"shape B{b} H{h} S{s} is not in {rec['run_id']}")

    # multiples in words cannot come from a record
    words = WORD_MULTIPLE.findall(text)
    if words:
        problems.append(f"multiples stated in words, which no record backs: {words}")

    # the GPU: named on the page, and the one every linked record was measured on
    gpu_box = pg.locator(f".{BOOK_GPU_CLASS}")
    gpus = {r["provenance"]["gpu"] for r in recs}
    if gpu_box.count() != 1:
        problems.append(f"the page does not say which GPU this book shows (no .{BOOK_GPU_CLASS} statement)")
    elif rec["provenance"]["gpu"] not in gpu_box.inner_text():
        problems.append(f"it names {gpu_box.inner_text()[:100]!r}, its record is of {rec['provenance']['gpu']}")
    if len(gpus) != 1:
        problems.append(f"it links records of several GPUs: {sorted(gpus)}")
    assert not problems, f"{page}:\n  - " + "\n  - ".join(problems)


def test_landing_chart_visible(open_page):
    pg = open_page(toc_pages()[0])
    chart = pg.locator("img[src*='headline']")
    assert chart.count() >= 1, "the landing page has no headline chart"
    assert chart.first.is_visible()
    box = chart.first.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, f"headline chart too small: {box}"


# -------------------------------------------------------------------------------------- the status page
def test_status_page_names_the_gpu_and_links_each_record(open_page, site):
    from flashcore.chapters import CHAPTERS

    page = next(p for p in toc_pages() if p.endswith("generated/status.html"))
    pg = open_page(page)
    # the records in the rows of the chapters (the GPU comparison's row links two GPUs' records, by design)
    hrefs = pg.eval_on_selector_all(
        "article table tr", "rows => rows.filter(r => r.cells.length && "
        f"{sorted(CHAPTERS)!r}.includes(r.cells[0].innerText.trim())).flatMap(r => "
        "Array.from(r.querySelectorAll('a[href$=\"run.json\"]')).map(a => a.getAttribute('href')))")
    recs = [json.loads((HTML / unquote(urlparse(urljoin(site + page, h)).path).lstrip("/")).read_text())
            for h in hrefs]
    assert recs, f"{page} links no chapter record in its chapters' rows"
    gpus = {r["provenance"]["gpu"] for r in recs}
    assert len(gpus) == 1, f"{page}: the chapters of one build read records of several GPUs: {sorted(gpus)}"
    intro = pg.locator("article p").first.inner_text()
    assert next(iter(gpus)) in intro, f"{page} does not name the build's GPU ({next(iter(gpus))}) above its table"
    labels = pg.eval_on_selector_all("article td a[href$='run.json']", "els => els.map(e => e.innerText.trim())")
    long_labels = [t for t in labels if len(t) > 24]
    assert not long_labels, f"{page}: record links labelled with long ids (the id is in the link): {long_labels[:3]}"
