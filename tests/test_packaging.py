"""The install layout: tasks/ and cli/ live only inside the metaaugment namespace."""
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_tasks_and_cli_install_inside_the_namespace(tmp_path):
    # Run from an unrelated folder so the repository root is not on sys.path.
    code = ("import importlib.util as u, metaaugment.tasks as t, metaaugment.cli.main as c;"
            "print(u.find_spec('tasks'), u.find_spec('cli'), t.__name__, c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None", "metaaugment.tasks", "metaaugment.cli.main"]


@pytest.mark.slow
def test_field_dependencies_are_installed(tmp_path):
    # learn2learn needs the sdist rebuild of scripts/install_learn2learn.sh; a missing install
    # step would only show up in later issues' code, so check it here.
    code = "import learn2learn, higher, torchvision; from learn2learn.data import MetaDataset, TaskDataset"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, check=True)
