"""The install layout: tasks/ and cli/ live only inside the metaaugment namespace."""
import subprocess
import sys

import pytest


@pytest.mark.multiprocess
def test_tasks_and_cli_install_inside_the_namespace(tmp_path):
    # Run from an unrelated folder so the repository root is not on sys.path.
    code = ("import importlib.util as u, metaaugment.tasks as t, metaaugment.cli.main as c;"
            "print(u.find_spec('tasks'), u.find_spec('cli'), t.__name__, c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None", "metaaugment.tasks", "metaaugment.cli.main"]


@pytest.mark.multiprocess
def test_field_dependencies_are_installed(tmp_path):
    # learn2learn needs the sdist rebuild of scripts/install_learn2learn.sh; a missing install
    # step would only show up in later issues' code, so check it here.
    code = "import learn2learn, higher, torchvision; from learn2learn.data import MetaDataset, TaskDataset"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, check=True)


@pytest.mark.multiprocess
def test_the_built_wheel_holds_every_package_of_the_source_tree(tmp_path):
    """Packages are found, not listed: a new sub-package is in the wheel without an edit."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).parents[1]
    source = tmp_path / "source"
    for name in ("metaaugment", "tasks", "cli"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("metaaugment-*.whl")
    in_wheel = {str(Path(name).parent).replace("/", ".") for name in zipfile.ZipFile(wheel).namelist()
                if name.endswith("/__init__.py")}
    in_tree = {".".join(["metaaugment", *(() if folder == "metaaugment" else (folder,)),
                         *init.parent.relative_to(root / folder).parts])
               for folder in ("metaaugment", "tasks", "cli") for init in (root / folder).rglob("__init__.py")}
    assert in_wheel == in_tree and {"metaaugment.parallel", "metaaugment.imageops"} <= in_wheel
