"""The series as a website (``make book``): pages open in Chromium with their figures and a Colab launch link."""

from __future__ import annotations

import subprocess

import pytest

from deeplab_lessons import config

BOOK = config.REPO_ROOT / "build" / "book"
PAGES = ("00_start_here", "05_training_on_voc", "06_dense_crf")


@pytest.fixture(scope="module")
def book(browser_ready):
    """The built book (``make test`` builds it first; a bare ``pytest`` run builds it here)."""
    if not (BOOK / "index.html").is_file():
        subprocess.run(["make", "book"], cwd=config.REPO_ROOT, check=True, capture_output=True)
    return BOOK


@pytest.mark.browser
@pytest.mark.parametrize("page", PAGES)
def test_book_page_shows_its_figures(book, chromium, page):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    try:
        tab = context.new_page()
        tab.goto((book / "notebooks" / f"{page}.html").as_uri())
        assert tab.locator("h1").first.inner_text().strip(), "the page has its title"
        figures = tab.locator("img[src*='_images/']")
        assert figures.count() >= 1, "the committed figures are on the page"
        decoded = tab.evaluate(
            "() => [...document.querySelectorAll(\"img[src*='_images/']\")].map(i => i.complete && i.naturalWidth)")
        assert all(width and width > 50 for width in decoded), f"figures that did not load: {decoded}"
        colab = tab.locator(f"a[href^='https://colab.research.google.com/github/'][href$='notebooks/{page}.ipynb']")
        assert colab.count() >= 1, "a launch link to Colab for this very notebook"
    finally:
        context.close()
