"""``ise view`` in a real browser (Debian's headless chromium through selenium) on a real run.

The dataset comes from the real pipeline (scripted LLM, real Kafka, Redis and Docker): two
episodes with real tool results, a non-zero exit code and an ``edit`` diff. Beside its shard lies
a second one in the reference implementation's middle format, holding a failed record whose tool
output carries a ``<script>`` tag, and a last line cut off mid-write. ``ise view`` runs as its own
process; the browser opens the list, filters by verdict, searches, opens trajectories and checks
what the DOM shows. Screenshots go to ``out/test-artifacts/viewer/`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from services.cli.pipeline import run_pipeline
from services.common.ids import new_run_id
from services.intent.settings import IntentSettings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "out" / "test-artifacts" / "viewer"
EVIL = "<script>document.title='owned'</script>"
REQUEST = "Reference request: archive the invoices folder"
OUTPUT = f"{EVIL}\n\n(Command exited with code 2)"
TAR = {"id": "r1", "type": "function", "function": {"name": "exec", "arguments": {"command": "tar"}}}
REFERENCE = {  # the reference's middle format: arguments as objects, the exit code in the text
    "status": "failed",
    "session_id": "intent_9__worker__reference",
    "intent": REQUEST,
    "messages": [
        {"role": "system", "content": "runtime prompt"},
        {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": "", "tool_calls": [TAR]},
        {"role": "tool", "tool_call_id": "r1", "name": "exec", "content": OUTPUT, "success": True},
        {"role": "assistant", "content": "It failed."},
    ],
    "metadata": {"domains": [{"name": "Backup", "selected_tasks": [{"name": "Archive files"}]}]},
}


@pytest.fixture
async def run_dir(pipeline_env, out_dir: Path) -> Path:
    """A real run's folder, plus a shard in the reference's format ending in a torn line."""
    result = await run_pipeline(new_run_id(), pipeline_env("default"), out_dir, IntentSettings(count=2, seed=11), 420)
    shards = sorted(result.run_dir.glob("trajectories-*.jsonl"))
    assert shards, "the pipeline wrote no trajectories"
    (result.run_dir / "trajectories-reference.jsonl").write_text(json.dumps(REFERENCE) + '\n{"messages": [')
    return result.run_dir


@pytest.fixture
def viewer(run_dir: Path) -> Iterator[str]:
    """``ise view RUN_DIR`` as its own process; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "view", str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline(), proc.stdout.readline()]
        found = re.search(r"http://127\.0\.0\.1:\d+/", printed[1])
        assert found, (printed, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        assert "1 line(s) skipped" in printed[0]
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are installed by scripts/install.sh"
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def shot(browser: WebDriver, name: str) -> None:
    """A screenshot of the whole page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(int(height), 600), 6000))
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def rows(browser: WebDriver) -> list[tuple[str, str]]:
    """(verdict, title) of each listed record."""
    found = browser.find_elements(By.CSS_SELECTOR, "#records tr.record")
    return [(r.get_attribute("data-verdict") or "", r.find_element(By.CSS_SELECTOR, ".title a").text) for r in found]


def facet(browser: WebDriver, name: str, value: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f'#facet-{name} a[data-value="{value}"]').click()


def test_browse_filter_and_open_trajectories(viewer: str, browser: WebDriver) -> None:
    browser.get(viewer)
    assert browser.find_element(By.ID, "matched").text == "3"
    assert "1 line(s) skipped" in browser.find_element(By.ID, "summary").text
    assert "cut off mid-write" in browser.find_element(By.ID, "skipped").text
    assert sorted(v for v, _ in rows(browser)) == ["failed", "success", "success"]
    shot(browser, "list")

    facet(browser, "verdict", "failed")
    assert rows(browser) == [("failed", REQUEST)]
    assert "verdict=failed" in browser.current_url
    counts = {
        li.text.split()[0]: li.text.split()[-1] for li in browser.find_elements(By.CSS_SELECTOR, "#facet-verdict li")
    }
    assert counts == {"success": "2", "failed": "1"}  # the other verdicts stay one click away
    shot(browser, "list-failed")

    browser.find_element(By.CSS_SELECTOR, "#records .title a").click()  # the reference's record
    assert browser.find_element(By.ID, "verdict").text == "failed"
    tool = browser.find_element(By.CSS_SELECTOR, "article.msg.tool")
    assert EVIL in tool.find_element(By.CSS_SELECTOR, "pre").text  # shown as text, never run
    assert browser.find_elements(By.TAG_NAME, "script") == [] and browser.title != "owned"
    assert (
        "failed" in (tool.get_attribute("class") or "")
        and tool.find_element(By.CSS_SELECTOR, ".exit.bad").text == "exit 2"
    )

    browser.get(viewer)
    facet(browser, "verdict", "success")
    assert [v for v, _ in rows(browser)] == ["success", "success"]
    box = browser.find_element(By.ID, "q")
    box.send_keys(rows(browser)[0][1].split()[0] + "\n")  # search by a word of the first intent
    assert "verdict=success" in browser.current_url and "q=" in browser.current_url
    assert rows(browser) and all(v == "success" for v, _ in rows(browser))
    browser.find_element(By.CSS_SELECTOR, "#records .title a").click()
    check_our_trajectory(browser)
    shot(browser, "trajectory")
    check_routes(viewer)


def check_routes(viewer: str) -> None:
    """The raw JSON of a record, and a page saying what exists for anything else."""
    with urllib.request.urlopen(viewer + "t/0.json") as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert "script-src" not in response.headers["Content-Security-Policy"]  # no script may run at all
        assert isinstance(json.loads(response.read())["messages"], list)
    for path, status, said in (("t/3", 404, "the dataset has 3"), ("nothing", 404, "the list is at /")):
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(viewer + path)
        assert failed.value.code == status and said in failed.value.read().decode()


def check_our_trajectory(browser: WebDriver) -> None:
    """One of the pipeline's records: metadata panels, roles, tool calls, exit codes, the edit diff."""
    assert browser.find_element(By.ID, "verdict").text == "success"
    assert browser.find_element(By.ID, "reason").text.startswith("why:")
    persona = browser.find_element(By.ID, "persona").text
    assert "name" in persona and "industry" in persona
    intent = browser.find_element(By.ID, "intent").text
    assert re.search(r"complexity (simple|medium|complex)", intent) and "3 user turns" in intent
    assert "verification asked" in browser.find_element(By.ID, "flags").text
    assert "agent" in browser.find_element(By.ID, "usage").text
    roles = {e.get_attribute("class").split()[1] for e in browser.find_elements(By.CSS_SELECTOR, "article.msg")}
    assert roles == {"system", "user", "assistant", "tool"}
    args = browser.find_element(By.CSS_SELECTOR, "article.msg.assistant .call pre.args").text
    assert args.startswith("{\n  ") and json.loads(args)  # pretty-printed JSON
    codes = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "article.msg.tool .exit")]
    assert "exit 3" in codes and "exit 0" in codes
    failed = browser.find_element(By.CSS_SELECTOR, "article.msg.tool.failed .exit.bad")
    assert failed.text == "exit 3" and failed.value_of_css_property("color") == "rgba(207, 34, 46, 1)"
    assert any(e.text.endswith(" ms") for e in browser.find_elements(By.CSS_SELECTOR, "article.msg.tool .duration"))
    diff = browser.find_element(By.CSS_SELECTOR, "article.msg.tool pre.diff")
    added = diff.find_element(By.CSS_SELECTOR, ".d-add").text
    removed = diff.find_element(By.CSS_SELECTOR, ".d-del").text
    assert added == "+- produce the report (input check exits 3: fix first)" and removed == "-- produce the report"
    assert diff.find_element(By.CSS_SELECTOR, ".d-hunk").text.startswith("@@")
