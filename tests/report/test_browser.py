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
