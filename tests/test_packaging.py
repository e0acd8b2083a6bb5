"""The install layout: tasks/ and cli/ live only inside the metaaugment namespace."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def copy_source(source: Path) -> Path:
    """What a source install needs (the three package folders and the build files) copied
    into `source`, without this checkout's runs, caches and virtual environment."""
    for name in ("metaaugment", "tasks", "cli"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    return source


@pytest.mark.multiprocess
def test_tasks_and_cli_install_inside_the_namespace(tmp_path):
    # Run from an unrelated folder so the repository root is not on sys.path.
    code = ("import importlib.util as u, metaaugment.tasks as t, metaaugment.cli.main as c;"
            "print(u.find_spec('tasks'), u.find_spec('cli'), t.__name__, c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None", "metaaugment.tasks", "metaaugment.cli.main"]


def test_make_installs_the_learn2learn_cross_check():
    # `make install` builds learn2learn (an optional part) with scripts/install_learn2learn.sh so
    # that the tests compare our higher inner loop and task sampler with it; a broken build step
    # would silently skip those comparisons.
    import higher  # noqa: F401
    from learn2learn.data import MetaDataset, TaskDataset  # noqa: F401


@pytest.mark.multiprocess
def test_the_built_wheel_holds_every_package_of_the_source_tree(tmp_path):
    """Packages are found, not listed: a new sub-package is in the wheel without an edit."""
    import zipfile

    root = ROOT
    source = copy_source(tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("metaaugment-*.whl")
    in_wheel = {str(Path(name).parent).replace("/", ".") for name in zipfile.ZipFile(wheel).namelist()
                if name.endswith("/__init__.py")}
    in_tree = {".".join(["metaaugment", *(() if folder == "metaaugment" else (folder,)),
                         *init.parent.relative_to(root / folder).parts])
               for folder in ("metaaugment", "tasks", "cli") for init in (root / folder).rglob("__init__.py")}
    assert in_wheel == in_tree and {"metaaugment.parallel", "metaaugment.imageops"} <= in_wheel


def link_distributions(names: tuple[str, ...], venv: Path) -> None:
    """Put this environment's distributions `names`, with everything they require, on the
    path of the fresh environment `venv`, as links: a folder of links named by a .pth file,
    which pip counts as installed. (Installing torch again would copy several GB of CUDA
    libraries for two minutes; what the test checks is everything pip installs besides.)"""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    linked = venv / "linked"
    linked.mkdir()
    seen, todo = set(), [(name, ()) for name in names]
    while todo:
        name, extras = todo.pop()
        distribution = metadata.distribution(name)
        key = (distribution.metadata["Name"].lower().replace("_", "-"), extras)
        if key in seen or key[0] in ("pip", "setuptools"):  # the venv's own
            continue
        seen.add(key)
        todo += [(req.name, tuple(sorted(req.extras))) for req in map(Requirement, distribution.requires or ())
                 if not req.marker or any(req.marker.evaluate({"extra": extra}) for extra in ("", *extras))]
        for top in {file.parts[0] for file in distribution.files or ()}:
            if top not in ("..", "__pycache__") and not top.endswith(".pth") and not (linked / top).exists():
                (linked / top).symlink_to(Path(distribution.locate_file(top)))
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    (site_packages / "linked-from-the-test-environment.pth").write_text(f"{linked}\n")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_plain_pip_into_a_fresh_environment_gives_a_working_tool(tmp_path):
    """A user's own environment: a fresh venv with only torch and torchvision (this one's,
    linked), then `pip install <source>`. Few-shot and regression runs work without
    learn2learn, which that environment does not have. About a minute."""
    source = copy_source(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, metaaug = venv / "bin" / "python", venv / "bin" / "metaaug"
    link_distributions(("torch", "torchvision"), venv)
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert {"torch", "torchvision"} <= {line.split()[0] for line in listed.splitlines()[2:]}
    assert "metaaugment" not in listed and "higher" not in listed  # nothing of ours yet
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert subprocess.run([str(python), "-c", "import learn2learn"], capture_output=True).returncode != 0
    work = tmp_path / "work"
    work.mkdir()
    few_shot = ["--epochs", "1", "--steps-per-epoch", "5", "--val-tasks", "5", "--test-tasks", "10", "--quiet"]
    for benchmark, policy in (("glyphs", "intershuffle"), ("sinusoid", "target-noise")):
        result = subprocess.run([str(metaaug), "run", benchmark, "--policy", policy, *few_shot], cwd=work,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (work / "runs" / benchmark / policy / "seed0" / "results.json").exists()
    asked = subprocess.run([str(metaaug), "run", "glyphs", "--learner-set", "inner_loop=learn2learn", *few_shot],
                           cwd=work, capture_output=True, text=True)
    assert asked.returncode == 2 and "pip install 'metaaugment[learn2learn]'" in asked.stderr
