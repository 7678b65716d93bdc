"""`mine-jepa report` in a real headless browser (Chromium from Debian's packages, driven by
Playwright): the page loads without a console error, every image decodes, the screenshot is not
blank, a scripted accept / reject exports what was chosen, and strings from files cannot run script."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.sim.mission import MissionConfig, write_mission_bag

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the test extra has it)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make browser installs "
                                                                            "Debian's package)")]


@pytest.fixture(scope="module")
def mission(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("report")
    bag, _objects, _lines = write_mission_bag(MissionConfig(lines=2, line_spacing_m=30.0, line_length_m=60.0, seed=2),
                                              folder / "m<b>x&amp;y", truth=folder / "truth.geojson")
    return bag, folder / "truth.geojson"


def open_page(page_path: Path, run: Any) -> dict[str, Any]:
    """Load the page in Chromium, let ``run(page)`` act on it, and return what happened."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400}, accept_downloads=True)
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            result = {"problems": problems, "images": page.evaluate(
                "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)"),
                "screenshot": page.screenshot(full_page=False)}
            result.update(run(page))
            result["problems"] = problems
            return result
        finally:
            browser.close()


def test_the_report_reviews_in_a_browser(mission: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bag, truth = mission
    out = tmp_path / "report"
    assert main(["report", "--bag", str(bag), "--detections-topic", "/sonar/sidescan/ground_truth", "--truth", str(truth),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    objects = json.loads(truth.read_text())["features"]
    assert f"{len(objects)} contact(s)" in printed and "Pd MILCO: 1.00" in printed and "false contacts: 0" in printed

    def act(page: Any) -> dict[str, Any]:
        ids = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.id)")
        confidences = page.eval_on_selector_all(".card", "cs => cs.map(c => Number(c.dataset.confidence))")
        page.locator(".card").nth(0).locator("input[value=accept]").check()
        page.locator(".card").nth(1).locator("input[value=reject]").check()
        page.select_option("#sort", "class")
        classes = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.class)")
        with page.expect_download() as download:
            page.click("#export-csv")
        downloaded = Path(download.value.path()).read_text()
        return {"ids": ids, "confidences": confidences, "classes": classes, "csv": page.evaluate("reviewExport('csv')"),
                "geojson": page.evaluate("reviewExport('geojson')"), "downloaded": downloaded,
                "title": page.title(), "text": page.inner_text("body")}

    got = open_page(out / "report.html", act)
    assert got["problems"] == []
    assert got["images"] and all(got["images"]) and len(got["images"]) >= len(objects)
    import cv2

    shot = cv2.imdecode(np.frombuffer(got["screenshot"], np.uint8), cv2.IMREAD_GRAYSCALE)
    assert shot.shape == (1400, 1100) and shot.std() > 10  # not blank
    assert got["confidences"] == sorted(got["confidences"], reverse=True)  # sorted by confidence at load
    assert got["classes"] == sorted(got["classes"])
    rows = {r["id"]: r["decision"] for r in csv.DictReader(io.StringIO(got["csv"]))}
    assert rows[got["ids"][0]] == "accept" and rows[got["ids"][1]] == "reject"
    assert sorted(rows.values()).count("unreviewed") == len(objects) - 2
    assert got["downloaded"] == got["csv"]
    features = json.loads(got["geojson"])["features"]
    assert {f["properties"]["id"]: f["properties"]["decision"] for f in features} == rows
    assert got["title"] == "Contact report: m<b>x&amp;y"  # the bag's name shown as text, not markup
    assert "m<b>x&amp;y" in got["text"]


def test_strings_from_a_model_cannot_run_script(mission: tuple[Path, Path], tmp_path: Path, busy_checkpoint: Path) -> None:
    from mine_jepa_ros.detect.model import load_checkpoint, save_checkpoint

    model = load_checkpoint(busy_checkpoint)
    hostile = ["background", "<script>window.pwned = 1</script>", "NOMBO\" onmouseover=\"window.pwned = 2"]
    model.metadata = replace(model.metadata, class_names=hostile)
    path = save_checkpoint(tmp_path / "hostile.safetensors", model)
    bag, _truth = mission
    out = tmp_path / "report"
    assert main(["report", "--bag", str(bag), "--model", str(path), "--thresholds", "0.34", "--device", "cpu",
                 "--precision", "fp32", "--out", str(out)]) == 0

    def act(page: Any) -> dict[str, Any]:
        page.hover(".card h3")
        return {"pwned": page.evaluate("typeof window.pwned"), "scripts": page.evaluate("document.scripts.length"),
                "headings": page.eval_on_selector_all(".card h3", "hs => hs.map(h => h.firstChild.textContent.trim())"),
                "classes": json.loads(page.evaluate("reviewExport('geojson')"))["features"]}

    got = open_page(out / "report.html", act)
    assert got["problems"] == [] and got["pwned"] == "undefined" and got["scripts"] == 1
    assert set(got["headings"]) <= set(hostile[1:]) and got["headings"], got["headings"]
    assert {f["properties"]["class"] for f in got["classes"]} <= set(hostile[1:])
