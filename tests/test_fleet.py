"""One view of the fleet (issue 19, items 2 and 4): ``stagewise fleet`` after runs and promotions
dev -> test -> prod, with a prod rollout that was rolled back, on a private embedded AWS.

What a user sees: the three accounts side by side (champion, challenger, rollout step, last gates,
last run, alarms, drift, promotion path back to dev), read as each account's read-only reader role
(which the embedded IAM holds to its policy: it may not write), and the pages: ``fleet.html`` and
``model-engagement.html`` (versions with lineage, the rollout timeline with the rollback marked,
two versions compared, the audit trail), rendered in headless Chromium with no console errors.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from conftest import REPO
from test_dashboard_preview import BROWSER_ARGS, CHROMIUM_INSTALL, _chromium
from test_executors import STAGEWISE, Place, generated, project_with

SHOTS = REPO / ".stagewise" / "screenshots"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Any:
    place = Place(tmp_path_factory.mktemp("fleet-home"), project_with(tmp_path_factory.mktemp("fleet-project"))).up()
    data = tmp_path_factory.mktemp("fleet-data")
    cli = place.invoke  # the runs and promotions that make the fleet: the CLI in this process; `fleet` runs as a process

    for seed in (1, 2):
        generated(data / f"d{seed}.parquet", 3000, seed)
    cli("run", "--data", str(data / "d1.parquet"), "--env", "dev")                           # dev v1
    cli("promote", "engagement", "1", "--from", "dev", "--to", "test")                      # test v1 champion
    cli("promote", "engagement", "1", "--from", "test", "--to", "prod", "--approver", "Ada", "--reason", "clean week")
    cli("run", "--data", str(data / "d2.parquet"), "--env", "dev")                           # dev v2
    cli("promote", "engagement", "2", "--from", "dev", "--to", "test")                      # test v2 at 50 %
    cli("registry", "advance", "engagement", "--env", "test")                               # test v2 champion
    cli("promote", "engagement", "2", "--from", "test", "--to", "prod", "--approver", "Ada", "--reason", "week two")
    cli("score", "--data", str(data / "d2.parquet"), "--env", "prod")                       # prod: v2 at 10 %, gates held
    cli("registry", "rollback", "engagement", "--env", "prod", "--reason", "call centre complaints")
    out = tmp_path_factory.mktemp("fleet-pages")
    proc = subprocess.run([STAGEWISE, "fleet", "--out", str(out), "--json"], env=place.env, capture_output=True, text=True,
                          cwd=place.project, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = subprocess.run([STAGEWISE, "fleet", "--no-pages"], env={**place.env, "COLUMNS": "200"}, capture_output=True,
                              text=True, cwd=place.project, timeout=600)
    yield place, json.loads(proc.stdout), terminal
    place.server.down()


def test_the_three_accounts_side_by_side_with_promotion_paths_back_to_dev(fleet):
    _, doc, terminal = fleet
    envs = {e["environment"]: e for e in doc["environments"]}
    assert list(envs) == ["dev", "test", "prod"] and all(e["error"] is None for e in envs.values())
    assert [e["account_id"] for e in envs.values()] == ["314159265358", "271828182845", "161803398874"]
    dev, test, prod = (envs[e]["models"]["engagement"] for e in ("dev", "test", "prod"))
    assert (dev["serving"]["champion"], test["serving"]["champion"], prod["serving"]["champion"]) == (2, 2, 1)
    assert [(p["environment"], p["version"]) for p in prod["paths"]["champion"]] == [("dev", 1), ("test", 1), ("prod", 1)]
    assert [(p["environment"], p["version"]) for p in test["paths"]["champion"]] == [("dev", 2), ("test", 2)]
    # prod: v2 rolled out at 10 %, held on its gates by a scoring run, then rolled back
    timeline = [(t["action"], t["weight"], t["rolled_back"]) for t in prod["timeline"]]
    assert timeline[-3:] == [("version.register", 10.0, False), ("rollout.hold", 10.0, False), ("rollout.rollback", 0.0, True)]
    assert prod["last_gates"]["action"] == "rollout.hold" and prod["last_gates"]["gates"]
    assert prod["last_run"]["outcome"] == "succeeded" and dev["last_run"]["outcome"] == "succeeded" and test["last_run"] is None
    assert prod["drift"]["status"] in ("ok", "drifting") and prod["alarms"] == []
    v2 = next(v for v in prod["versions"] if v["version"] == 2)
    assert v2["stage"] == "rolled_back" and v2["data_sha256"] and v2["hyperparameters"] and v2["validation"]["success"]
    # the terminal table: one row, three columns
    assert terminal.returncode == 0, terminal.stderr
    assert "champion v1" in terminal.stdout and "dev v1 → test v1 → prod v1" in terminal.stdout


def test_the_fleet_reads_as_each_accounts_reader_role_which_cannot_write(fleet, monkeypatch):
    place, _, _ = fleet
    from stagewise.platform.runtime.environment import connect

    monkeypatch.setenv("STAGEWISE_HOME", str(place.home))
    monkeypatch.setenv("STAGEWISE_EMBEDDED_PORT", str(place.port))
    for env in ("dev", "test", "prod"):
        conn = connect(env, project_dir=place.project)
        reader = connect(env, project_dir=place.project, role_arn=conn.resources.reader_role_arn, session_name="fleet-test")
        assert reader.clients.caller_identity()["Arn"].split("/")[1] == f"stagewise-{env}-reader"
        ddb, table = reader.clients.client("dynamodb"), reader.resources.registry_table.name
        assert ddb.get_item(TableName=table, Key={"pk": {"S": "MODEL#engagement"}, "sk": {"S": "MODEL"}})["Item"]
        with pytest.raises(Exception, match=f"stagewise-{env}-reader.*not authorized to perform: dynamodb:PutItem"):
            ddb.put_item(TableName=table, Item={"pk": {"S": "MODEL#x"}, "sk": {"S": "MODEL"}})
        with pytest.raises(Exception, match="not authorized to perform: s3:GetObject"):  # no model binary, no data
            reader.clients.client("s3").get_object(Bucket=reader.resources.data_bucket.name, Key="incoming/x.parquet")


def test_the_pages_render_in_chromium_with_the_rollback_on_the_prod_timeline(fleet):
    _, doc, _ = fleet
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright (Python) is needed to drive Chromium: {CHROMIUM_INSTALL}", pytrace=False)
    pages = doc["pages"]
    assert set(pages) == {"fleet", "engagement"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("request", lambda req: requests.append(req.url))
            from pathlib import Path

            fleet_page = Path(pages["fleet"]).resolve().as_uri()
            assert page.goto(fleet_page).ok
            row = page.locator("tr[data-model='engagement']")
            assert row.locator("td[data-env]").count() == 3
            assert "dev v1 → test v1 → prod v1" in row.locator("td[data-env='prod']").inner_text()
            page.screenshot(path=str(SHOTS / "fleet.png"), full_page=True)
            page.click("a[href='model-engagement.html']")  # the fleet page links to the model page
            prod = page.locator("section[data-env='prod']")
            assert prod.locator("svg.timeline line.rollback").count() == 1
            assert prod.locator("svg.timeline circle.gate").count() >= 1
            assert "rollout.rollback" in prod.inner_text() and "call centre complaints" in prod.inner_text()
            assert "Two versions compared" in prod.inner_text() and "Feature importance" in prod.inner_text()
            prod.screenshot(path=str(SHOTS / "model-engagement-prod.png"))
            assert errors == []
            assert all(r.startswith("file://") for r in requests)  # the pages load nothing from anywhere
        finally:
            browser.close()
    for shot in ("fleet.png", "model-engagement-prod.png"):
        assert (SHOTS / shot).stat().st_size > 20_000
        print(f"\nscreenshot: {SHOTS / shot}")
