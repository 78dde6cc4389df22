"""The conda environment file and pyproject.toml describe the same install."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_python_version_matches_requires_python():
    conda_deps = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    python = [d for d in conda_deps if d.startswith("python")]
    assert python == ["python=3.11"]
    assert _pyproject()["project"]["requires-python"] == ">=3.11"


def test_pip_section_installs_existing_extras_or_pinned_core_deps():
    """Every pip line is the package itself with real extras, or a requirement pyproject also has."""
    pip_lines = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    project = _pyproject()["project"]
    extras = set(project["optional-dependencies"])
    every_requirement = set(project["dependencies"]).union(*project["optional-dependencies"].values())
    editable = [line for line in pip_lines if line.startswith("-e .")]
    assert len(editable) == 1, "environment.yml must install the package itself (-e .[...])"
    named = editable[0].removeprefix("-e .").strip("[]").split(",")
    assert {"lab", "test"} <= set(named) <= extras, f"extras {named} vs pyproject {sorted(extras)}"
    for line in pip_lines:
        if line not in editable:
            assert line in every_requirement, f"{line!r} in environment.yml is not in pyproject.toml"


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert "torch==2.13.0" in _pyproject()["project"]["dependencies"]


def test_package_imports():
    import pi0lab

    assert pi0lab.__version__ == _pyproject()["project"]["version"]
