"""Package discovery: every folder with an ``__init__.py`` under the four source roots is shipped,
plus the data-only folders of :data:`DATA_PACKAGES` (the embedded default model).

``pyproject.toml`` holds everything else; this file exists only because the source folders
``runtimes/``, ``converters/`` and ``boards/`` install under ``edgeseg.`` and setuptools' own
``packages.find`` cannot map several roots at once.
"""
from setuptools import find_packages, setup

ROOTS = {"edgeseg": "edgeseg", "edgeseg.runtimes": "runtimes", "edgeseg.converters": "converters",
         "edgeseg.boards": "boards"}

#: data-only folders (no ``__init__.py``) shipped as packages so that their package-data is declared
DATA_PACKAGES = ["edgeseg.assets"]

packages, package_dir = list(DATA_PACKAGES), {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
