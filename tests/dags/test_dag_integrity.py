"""Every DAG file imports with no error, with no connection or secret present."""

from __future__ import annotations

from pathlib import Path

import pytest

DAG_FILES = sorted(p for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py") if p.name != "__init__.py")


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory, monkeypatch_module):
    home = tmp_path_factory.mktemp("airflow-home")
    monkeypatch_module.setenv("AIRFLOW_HOME", str(home))
    monkeypatch_module.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch_module.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILES[0].parent))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_there_are_dag_files():
    assert DAG_FILES, "dags/ holds no DAG file"


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_dag_file_imports_cleanly(dagbag, path):
    errors = {k: v for k, v in dagbag.import_errors.items() if Path(k).name == path.name}
    assert not errors, errors
    dags = [d for d in dagbag.dags.values() if Path(d.fileloc).name == path.name]
    assert dags, f"{path.name} defines no DAG"
    for dag in dags:
        assert "feedloop" in dag.tags
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"


def test_every_manual_knob_is_a_typed_param_from_feedloop_params(dagbag):
    """The trigger form, the REST API and each run's first task (feedloop.airflow.params.check) see the same schemas."""
    from feedloop.airflow import params
    from feedloop.core.config import load_settings

    for dag_id, spec in params.SPECS.items():
        wired = dagbag.dags[dag_id].params
        defined = spec.definitions(load_settings())
        assert set(wired) == set(defined), dag_id
        for name in wired:
            assert wired.get_param(name).schema == defined[name].schema, f"{dag_id}.{name}"
            assert wired.get_param(name).schema.get("type") and wired.get_param(name).description, f"{dag_id}.{name}"
