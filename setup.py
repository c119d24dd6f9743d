"""Package discovery: every folder with an ``__init__.py`` under the four source roots is shipped.

``pyproject.toml`` holds everything else; this file exists only because the source folders
``runtimes/``, ``converters/`` and ``boards/`` install under ``edgeseg.`` and setuptools' own
``packages.find`` cannot map several roots at once.
"""
from setuptools import find_packages, setup

ROOTS = {"edgeseg": "edgeseg", "edgeseg.runtimes": "runtimes", "edgeseg.converters": "converters",
         "edgeseg.boards": "boards"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
