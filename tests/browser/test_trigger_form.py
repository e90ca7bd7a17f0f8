"""retrain_ranker's trigger form: typed params keep their bounds and reach the run as its conf."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser import uidata

pytestmark = pytest.mark.browser


def test_the_trigger_form_holds_a_param_to_its_bounds_and_the_run_gets_the_typed_params(ui, airflow):
    api = airflow.api
    api.wait_for_dag(uidata.RETRAIN)
    before = {r["dag_run_id"] for r in api.dag_runs(uidata.RETRAIN)}
    ui.page.goto(f"{airflow.url}/dags/{uidata.RETRAIN}")
    ui.page.get_by_role("button", name="Trigger").first.click()
    dialog = ui.page.get_by_role("dialog")
    window = dialog.locator("input[name='element_window_days']")
    expect(window).to_have_attribute("aria-valuemin", "3")  # dataset.min_window_days, from the Param
    expect(window).to_have_attribute("aria-valuemax", "90")

    window.fill("1")  # below the minimum: the field does not keep it
    window.blur()
    expect(window).to_have_value("3")
    ui.shot("window-days-held-to-its-minimum")
    window.fill("400")
    window.blur()
    expect(window).to_have_value("90")

    window.fill("5")
    window.blur()
    dialog.get_by_text(f"Unpause {uidata.RETRAIN} on trigger").click()  # the run stays queued: nothing executes
    ui.shot("valid-params")
    dialog.get_by_role("button", name="Trigger").last.click()
    expect(dialog).to_be_hidden()

    new = [r for r in api.dag_runs(uidata.RETRAIN) if r["dag_run_id"] not in before]
    assert len(new) == 1 and new[0]["run_type"] == "manual", new
    conf = new[0]["conf"]
    assert conf["window_days"] == 5 and conf["promotion_mode"] == "gate" and conf["objective"] == "lambdarank", conf
    ui.page.goto(f"{airflow.url}/dags/{uidata.RETRAIN}/runs/{quote(new[0]['dag_run_id'], safe='')}")
    expect(ui.page.get_by_role("link", name="Model report")).to_be_visible()
    ui.shot("the-triggered-run")
    api.http.delete(f"/dags/{uidata.RETRAIN}/dagRuns/{new[0]['dag_run_id']}")  # leave the shared Airflow as found
