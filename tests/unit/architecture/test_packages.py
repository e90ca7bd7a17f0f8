"""The package layering of plugins/feedloop (README, "Architecture"), kept by tests.

Every checker is first shown to fail on a small throwaway tree that breaks its rule (and to stay quiet
on one that keeps it); then one test per rule runs it on the real tree and lists every offender.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.architecture.checks import (MAX_LINES, airflow_at_import, import_cycles, long_modules,
                                            unexplained_lazy_imports, upward_imports)

FEEDLOOP = Path(__file__).resolve().parents[3] / "plugins" / "feedloop"


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake feedloop package under tmp_path (every folder a package); returns its directory."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for folder in path.relative_to(tmp_path).parents:
            if folder.parts and folder.parts[0] == "feedloop":
                (tmp_path / folder / "__init__.py").touch()
    return tmp_path / "feedloop"


def fail_listing(problems: list[str], rule: str) -> None:
    if problems:
        pytest.fail(f"{rule} ({len(problems)}):\n  " + "\n  ".join(problems), pytrace=False)


# --- each checker fails on a tree that breaks its rule ---------------------------------------------------

def test_a_cycle_is_reported_as_a_chain_with_the_line_of_every_link(tmp_path):
    root = tree(tmp_path, {
        "feedloop/core/a.py": "from feedloop.core import b\n",
        "feedloop/core/b.py": "import json\n\n\ndef later():\n    import feedloop.core.c\n",
        "feedloop/core/c.py": "from feedloop.core.a import THING\n",
        "feedloop/core/d.py": "from feedloop.core import a\n",
    })

    assert import_cycles(root) == [("feedloop.core.a -> feedloop.core.b -> feedloop.core.c -> feedloop.core.a  "
                                    "[feedloop/core/a.py:1, feedloop/core/b.py:5, feedloop/core/c.py:1]")]


def test_imports_that_only_go_one_way_are_no_cycle(tmp_path):
    root = tree(tmp_path, {
        "feedloop/core/a.py": "from feedloop.core import b\nfrom . import c\n",
        "feedloop/core/b.py": "import feedloop.core.c\n",
        "feedloop/core/c.py": "import json\n",
    })

    assert import_cycles(root) == []


def test_an_import_from_a_higher_layer_names_the_file_line_and_both_packages(tmp_path):
    root = tree(tmp_path, {
        "feedloop/core/storage.py": "import json\n\nfrom feedloop.training import train\n",
        "feedloop/training/train.py": "from feedloop.core import storage\nfrom feedloop.features import x\n",
        "feedloop/features/x.py": "from feedloop.quality.runner import validate_day\n",
        "feedloop/quality/runner.py": "def validate_day():\n    from feedloop.ops import cli\n",
        "feedloop/ops/cli.py": "from feedloop.airflow import params\n",
        "feedloop/airflow/params.py": "",
    })

    assert upward_imports(root) == [
        ("feedloop/core/storage.py:3: feedloop.core (rank 0) imports feedloop.training.train "
         "from feedloop.training (rank 3)"),
        ("feedloop/quality/runner.py:2: feedloop.quality (rank 2) imports feedloop.ops.cli "
         "from feedloop.ops (rank 6) inside a function"),
    ]


def test_a_package_missing_from_the_layer_table_is_reported(tmp_path):
    root = tree(tmp_path, {"feedloop/core/a.py": "", "feedloop/extras/b.py": "from feedloop.core import a\n"})

    assert upward_imports(root) == ["feedloop/extras: feedloop.extras has no rank in the layer table"]


def test_a_module_over_the_limit_is_named_with_its_line_count(tmp_path):
    root = tree(tmp_path, {"feedloop/core/long.py": "x = 1\n" * (MAX_LINES + 1),
                           "feedloop/core/full.py": "x = 1\n" * MAX_LINES})

    assert long_modules(root) == [f"feedloop/core/long.py: {MAX_LINES + 1} lines"]


def test_a_function_local_feedloop_import_without_a_lazy_comment_is_named(tmp_path):
    root = tree(tmp_path, {"feedloop/core/a.py": "", "feedloop/core/b.py": "", "feedloop/ops/cli.py": """\
from feedloop.core import a


def silent():
    from feedloop.core import b


def wrong_word():
    # avoids a cycle
    from feedloop.core import a


def explained_above():
    # lazy: the CLI starts fast
    from feedloop.core import a


def explained_inline():
    from feedloop.core import (  # lazy: the CLI starts fast
        a, b)


def not_ours():
    import json
"""})

    assert unexplained_lazy_imports(root) == [
        "feedloop/ops/cli.py:5: function-local import of feedloop.core.b has no '# lazy: <why>'",
        "feedloop/ops/cli.py:10: function-local import of feedloop.core.a has no '# lazy: <why>'",
    ]


def test_the_first_stage_module_that_loads_airflow_is_named_with_its_import_chain(tmp_path):
    root = tree(tmp_path, {
        "airflow/__init__.py": "",  # a stand-in: the probe only watches for the name
        "feedloop/core/clock.py": "def now():\n    import airflow\n",
        "feedloop/training/a.py": "from feedloop.training import b\n",
        "feedloop/training/b.py": "import json\nimport airflow\n",
        "feedloop/airflow/tasks.py": "import airflow\n",
    })

    assert airflow_at_import(root) == [
        "importing feedloop.training.a loads airflow: feedloop.training.a:1 -> feedloop.training.b:2 -> airflow"]


def test_a_stage_module_that_cannot_be_imported_is_reported(tmp_path):
    root = tree(tmp_path, {"feedloop/core/a.py": "import feedloop.core.gone\n",
                           "feedloop/ops/cli.py": "import airflow\n"})

    assert airflow_at_import(root) == [
        "could not import feedloop.core.a: ModuleNotFoundError: No module named 'feedloop.core.gone'"]


# --- the real tree ----------------------------------------------------------------------------------------

def test_no_feedloop_modules_import_each_other_in_a_cycle():
    fail_listing(import_cycles(FEEDLOOP), "import cycles")


def test_every_import_points_down_the_layers():
    fail_listing(upward_imports(FEEDLOOP), "imports from a higher layer")


def test_no_module_is_over_the_line_limit():
    fail_listing(long_modules(FEEDLOOP), f"modules over {MAX_LINES} lines")


def test_every_function_local_feedloop_import_says_why_it_is_lazy():
    fail_listing(unexplained_lazy_imports(FEEDLOOP), "function-local imports without '# lazy: <why>'")


def test_importing_every_module_below_the_airflow_boundary_loads_no_airflow():
    fail_listing(airflow_at_import(FEEDLOOP), "below the Airflow boundary")
