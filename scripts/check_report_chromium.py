#!/usr/bin/env python3
"""The page of `lmlab report` in headless Chromium (Debian's `chromium`, driven by the
`playwright` package from PyPI; no browser download: it launches the system binary).

Opens the report as a file:// URL and checks: no console errors and no page errors; no request
for anything but the file itself and data: URIs (the page is self-contained); every entry of
the table of contents that links (`#anchor`) resolves to an element; every chart (each
top-level inline `<svg>` and each `<img>`) is visible with a non-zero size once scrolled into
view, and each image is decoded. Writes a full-page screenshot. Exits 1 on the first failure,
0 with "ok" lines otherwise.

    python scripts/check_report_chromium.py [report.html] [--chromium /usr/bin/chromium] \\
        [--screenshot docs/img/explain_report.png] [--min-charts 1]
"""

import argparse
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright
from serve_check import check

# The charts: inline SVGs that are not inside another SVG, and images.
CHARTS = "svg:not(svg svg), img"


def check_toc(page):
    """Every `#anchor` link of the table of contents names an element of the page."""
    links = page.eval_on_selector_all("nav#toc a", "as => as.map(a => a.getAttribute('href'))")
    check("the table of contents lists the questions", page.locator("nav#toc li").count() > 0)
    broken = [h for h in links
              if not h.startswith("#") or not page.evaluate("id => !!document.getElementById(id)", h[1:])]
    check(f"the {len(links)} links of the table of contents resolve", not broken, ", ".join(broken))
    return len(links)


def check_charts(page, min_charts):
    """Every chart is rendered, visible and non-empty once scrolled into view."""
    charts = page.locator(CHARTS)
    n = charts.count()
    check(f"the page has at least {min_charts} chart(s)", n >= min_charts, f"found {n}")
    for i in range(n):
        c = charts.nth(i)
        c.scroll_into_view_if_needed()
        tag = c.evaluate("e => e.tagName.toLowerCase()")
        label = c.evaluate("e => (e.closest('figure')?.querySelector('figcaption')?.textContent"
                           " || e.getAttribute('alt') || '').trim()")
        what = f"chart {i + 1} <{tag}> {label!r}"
        box = c.bounding_box()
        check(f"{what} is visible", c.is_visible() and box is not None and box["width"] > 0 and box["height"] > 0,
              f"bounding box {box}")
        if tag == "img":
            check(f"{what} is decoded", c.evaluate("e => e.complete && e.naturalWidth > 0"))
        else:
            check(f"{what} has content", c.evaluate("e => e.childElementCount > 0"))
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", nargs="?", default="report.html", help="the HTML file of `lmlab report`")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot", default="docs/img/explain_report.png")
    ap.add_argument("--min-charts", type=int, default=1, help="fail when the page has fewer charts")
    ap.add_argument("--width", type=int, default=1000, help="viewport width in pixels")
    a = ap.parse_args()

    report = Path(a.report).resolve()
    check(f"the report {a.report} exists", report.is_file())
    url = report.as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": a.width, "height": 800})
        errors, external = [], []
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.on("request", lambda r: None if r.url == url or r.url.startswith("data:") else external.append(r.url))
        page.goto(url, wait_until="load")
        check("the page has a title", bool(page.title().strip()) and page.locator("h1").count() == 1)
        links = check_toc(page)
        sections = page.locator("main section").count()
        check(f"{sections} question section(s), one per link", sections == links, f"{links} links")
        # Before the charts (an external image would fail there less clearly), and again after
        # scrolling through them (lazy loads).
        check("no requests outside the page", not external, ", ".join(external[:5]))
        n = check_charts(page, a.min_charts)
        check("no requests outside the page after scrolling", not external, ", ".join(external[:5]))
        check("no console or page errors", not errors, "; ".join(errors[:5]))
        os.makedirs(os.path.dirname(a.screenshot) or ".", exist_ok=True)
        page.screenshot(path=a.screenshot, full_page=True)
        print(f"ok   screenshot {a.screenshot} ({sections} sections, {n} charts)")
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
