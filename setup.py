"""The package list, found from the source tree (the rest of the metadata is in pyproject.toml).

tasks/ and cli/ stay at the repository root but install inside the metaaugment namespace
(metaaugment.tasks, metaaugment.cli), which setuptools' find cannot express in
pyproject.toml: every folder with an __init__.py under metaaugment/, tasks/ and cli/ is a
package, so a new sub-package is in the wheel without editing a list
(tests/test_packaging.py builds the wheel and compares).
"""
from setuptools import find_packages, setup

ROOTS = {"metaaugment": "metaaugment", "metaaugment.tasks": "tasks", "metaaugment.cli": "cli"}


def packages() -> list[str]:
    """Every package of the three source roots, by its installed name."""
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder) if f"{name}.{sub}" not in ROOTS]
    return sorted(set(found))


setup(packages=packages(), package_dir=ROOTS)
