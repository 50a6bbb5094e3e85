"""The report in a real headless browser: loads with no console error, every figure rendered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from patchvae.cli import main

    out = tmp_path_factory.mktemp("demo") / "d"
    try:
        main(["demo", "--epochs", "2", "--quiet", "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_demo_end_to_end(demo_dir: Path, cli: Cli) -> None:
    assert (demo_dir / "mnist" / "metrics.json").is_file() and (
        demo_dir / "mnist" / "report.html"
    ).is_file()
    run = demo_dir / "stroke" / "run"
    for name in ("training.json", "report.html", "analysis-isles22-dwi-1mm/analysis.json"):
        assert (run / name).is_file(), name
    code, stdout, _ = cli(["inspect", str(demo_dir / "stroke" / "isles22-dwi-1mm.h5")])
    # 90 of 1756: robustness/test_faults.py checks it against an independent numpy count
    assert code == 0 and "lesion patches: 90 of 1756" in stdout


def _render(page_path: Path) -> tuple[list[str], list[str], list[list[int]]]:
    """Open a page in headless Chromium: console errors, requests made, image sizes."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all(
            "img", "images => images.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        browser.close()
    return errors, requests, sizes


def test_report_renders_in_headless_chromium(demo_dir: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium installed (Debian package `chromium`; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    for page_path in (
        demo_dir / "stroke" / "run" / "report.html",
        demo_dir / "mnist" / "report.html",
    ):
        errors, requests, sizes = _render(page_path)
        assert errors == [], errors
        assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        assert len(sizes) >= 4
        assert all(done and width > 0 and height > 0 for done, width, height in sizes), sizes


_POINT_ON_SCREEN = """(label) => {
  const plot = Bokeh.documents[0].get_model_by_name('latent');
  const view = Bokeh.index.find_one(plot);
  const data = plot.renderers[0].data_source.data;
  const i = data.label.lastIndexOf(label);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  return {
    i: i,
    x: canvas.left + view.frame.x_scale.compute(data.x[i]),
    y: canvas.top + view.frame.y_scale.compute(data.y[i]),
    patch: data.patch[i],
  };
}"""


def test_latent_explorer_in_headless_chromium(demo_dir: Path) -> None:
    """The explorer loads offline without errors; hovering a point shows that patch's image,
    clicking shows it on its slice, and the selector recolours the points."""
    if CHROMIUM is None:
        pytest.skip("no chromium installed (Debian package `chromium`; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    from playwright.sync_api import sync_playwright

    run = demo_dir / "stroke" / "run"
    page_path = run / "analysis-isles22-dwi-1mm" / "explorer.html"
    assert 'href="analysis-isles22-dwi-1mm/explorer.html"' in (run / "report.html").read_text()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "() => window.Bokeh && Bokeh.documents.length > 0 && "
            "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('latent'))"
        )
        point = page.evaluate(_POINT_ON_SCREEN, 1)  # a lesion patch, drawn on top
        assert point["i"] >= 0
        page.mouse.move(point["x"], point["y"])
        tooltip = page.wait_for_selector(f'img[src="{point["patch"]}"]', state="visible")
        assert tooltip is not None
        assert tooltip.evaluate("img => img.naturalWidth") == 28
        page.mouse.click(point["x"], point["y"])
        page.wait_for_function(
            "() => Bokeh.documents[0].get_model_by_name('slice').text.includes('<img')"
        )
        shown = page.evaluate("() => Bokeh.documents[0].get_model_by_name('slice').text")
        assert "slice" in shown and "data:image/png;base64," in shown
        canvas = page.locator("canvas").first
        before = canvas.screenshot()
        colours = (
            "() => Array.from(Bokeh.documents[0].get_model_by_name('latent')"
            ".renderers[0].data_source.data.colour)"
        )
        labels = page.evaluate(colours)
        page.select_option("select", "intensity baseline")
        page.wait_for_timeout(300)
        after = canvas.screenshot()
        assert page.evaluate(colours) != labels and after != before
        browser.close()
    assert errors == [], errors
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
