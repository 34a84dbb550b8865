"""tests/sidecar/test_fleet_report.py: the HTML report as a person sees it.

A fleet of three kafka-workload instances produces and consumes one topic of the real bed (SCRAM,
SASL_PLAINTEXT) with --json; `kafka-workload report` makes one page of them; headless Chromium
(Debian's chromium + chromedriver, driven by selenium) opens it from disk, and the test checks
what a reader would: the page loads with no console error, fetches nothing, shows the CLEAN
verdict, a summary row per instance and one for the fleet whose counts are the sum of the
instances' results and match what kcat (an independent reader) finds in the topic, and every
plot is an SVG with its axis labels and a legend line per instance plus the fleet. A screenshot
is taken; with KW_REPORT_KEEP=DIR the page and the screenshot are kept there as
example-report.html and example-report.png (docs/ holds the ones the README shows).

Its name sorts it before test_metrics.py, whose last test stops and restarts the broker: right
after that restart the 1-broker bed once stalled for seconds under this fleet and fenced itself
(partition leaders -1), which is a fault test's business, not this one's.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTANCES = 3
PER_INSTANCE = 6000


def chromium():
    """A headless Chromium under selenium, with the browser console log kept."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are not installed: run scripts/install-deps",
                    pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--hide-scrollbars"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def kcat_count(bed, topic):
    """Records in the topic, counted by kcat on the PLAINTEXT listener."""
    out = subprocess.run(["kcat", "-b", bed.plaintext, "-C", "-t", topic, "-o", "beginning",
                          "-e", "-q", "-f", "%o\n"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return len(out.splitlines())


def test_a_three_instance_fleet_report_opens_in_chromium_with_its_plots(
        bed, kw_bin, new_topic, new_user, spawn, tmp_path):
    topic = new_topic(partitions=3)
    user, password = new_user(topic, roles="producer,consumer")
    results = [tmp_path / f"instance-{i}.json" for i in range(1, INSTANCES + 1)]
    runs = [spawn([kw_bin, "--producer", "--consumer", "-s", bed.sasl_plaintext, "-u", user,
                   "-t", topic, "-n", str(PER_INSTANCE), "--rate", "1500",
                   "--group-id", f"{user}-g{i}", "--log-messages", "0", "--json", result],
                  env={"KAFKA_WORKLOAD_PASSWORD": password})
            for i, result in enumerate(results, 1)]
    for run in runs:
        assert run.wait(180) == 0, run.stderr()

    page = tmp_path / "fleet.html"
    made = subprocess.run([kw_bin, "report", *results, "-o", page], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    for needle in ["<script", "<link", "<img", "src=", "@import", "url("]:
        assert needle not in html, f"the page holds {needle!r}"
    assert password not in html

    instances = [json.loads(r.read_text()) for r in results]
    # Each instance's consumer read every instance's messages (distinct groups).
    acked = sum(r["producer"]["acked"] for r in instances)
    assert acked == INSTANCES * PER_INSTANCE
    assert kcat_count(bed, topic) == acked
    for r in instances:
        points = r["producer"]["series"]["points"]
        assert sum(p["acked"] for p in points) == r["producer"]["acked"]
        assert sum(p["consumed"] for p in r["consumer"]["series"]["points"]) == \
            r["consumer"]["records"]

    driver = chromium()
    try:
        driver.get(page.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        assert "fleet of 3" in driver.title

        verdict = driver.find_element("id", "verdict").text
        assert verdict.startswith("CLEAN"), verdict

        rows = driver.find_elements("css selector", "#summary tr")[1:]
        cells = {r.find_elements("tag name", "td")[0].text: [c.text for c in
                 r.find_elements("tag name", "td")] for r in rows}
        assert set(cells) == {*(p.name for p in results), "fleet (merged)"}, cells
        # Columns: instance, sent, acked, ...; the fleet's acked is the instances' sum.
        assert int(cells["fleet (merged)"][2]) == acked
        for r in results:
            assert int(cells[r.name][2]) == PER_INSTANCE

        plots = {f.get_attribute("id"): f for f in
                 driver.find_elements("css selector", "figure.plot")}
        expected = {"plot-produce-throughput", "plot-consume-throughput", "plot-ack-latency",
                    "plot-e2e-latency", "plot-ack-spectrum", "plot-e2e-spectrum"}
        assert expected <= set(plots), sorted(plots)
        for name, figure in plots.items():
            svg = figure.find_element("tag name", "svg")
            assert svg.size["width"] > 500 and svg.size["height"] > 200, (name, svg.size)
            texts = [t.get_attribute("textContent").strip() for t in
                     svg.find_elements("tag name", "text")]
            assert any("latency" in t or "msgs/s" in t or "records/s" in t for t in texts), \
                (name, texts)
            assert any(t in ("time since start (s)", "percentile") for t in texts), (name, texts)
            lines = svg.find_elements("tag name", "polyline")
            assert lines, f"{name} has no lines"
            if name.endswith("throughput") or name.endswith("spectrum"):
                for label in [*(p.name for p in results), "fleet (merged)"]:
                    assert label in texts, (name, label, texts)

        driver.set_window_size(1200, driver.execute_script(
            "return document.documentElement.scrollHeight"))
        shot = tmp_path / "fleet.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("KW_REPORT_KEEP")
        if keep:
            shutil.copy(page, Path(keep) / "example-report.html")
            shutil.copy(shot, Path(keep) / "example-report.png")
    finally:
        driver.quit()
