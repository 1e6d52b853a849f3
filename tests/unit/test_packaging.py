"""The distribution's packages: every one under the `voxrouter` import name, none forgotten."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str) -> Path:
    """Where package-dir puts `package` in the repository."""
    mapped = max((name for name in SETUPTOOLS["package-dir"] if package == name or package.startswith(name + ".")), key=len)
    rest = package[len(mapped):].lstrip(".")
    return ROOT / SETUPTOOLS["package-dir"][mapped] / Path(*rest.split(".") if rest else ())


def test_every_installed_import_name_is_under_voxrouter() -> None:
    tops = {package.split(".")[0] for package in SETUPTOOLS["packages"]}
    assert tops == {"voxrouter"}
    assert not {"config", "router", "providers", "local_engines"} & tops


def test_the_package_list_names_exactly_the_folders_that_are_packages() -> None:
    on_disk = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rest = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *rest)))
    assert set(SETUPTOOLS["packages"]) == on_disk
    for package in SETUPTOOLS["packages"]:
        assert (_folder(package) / "__init__.py").is_file(), package


def test_package_data_belongs_to_listed_packages_and_exists() -> None:
    for package, patterns in SETUPTOOLS["package-data"].items():
        assert package in SETUPTOOLS["packages"], package
        assert any(any(_folder(package).glob(pattern)) for pattern in patterns), (package, patterns)
