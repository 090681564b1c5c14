"""pyproject.toml and environment.yml must carry the same dependencies with the same lower bounds."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names for the PyPI distributions whose names differ
CONDA_NAME = {"torch": "pytorch"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return match.group(1).lower(), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def environment_requirements() -> dict[str, str]:
    """Parse the dependencies of environment.yml (conda list and its pip section) without a YAML library."""
    reqs = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        item = re.fullmatch(r"\s*-\s+([^#\s][^#]*?)\s*", line)
        if not item or item.group(1).startswith("-e ") or item.group(1) in ("pip", "pip:"):
            continue
        name, spec = _split(item.group(1))
        if name == "python":
            continue
        reqs[{v: k for k, v in CONDA_NAME.items()}.get(name, name)] = spec
    return reqs


def test_environment_yml_matches_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_python_lower_bound_matches():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = (ROOT / "environment.yml").read_text()
    assert project["requires-python"] == ">=3.10"
    assert "python>=3.10" in env


def test_parser_sees_a_disagreement(tmp_path, monkeypatch):
    """The check above can fail: a changed bound in one file is detected."""
    env = (ROOT / "environment.yml").read_text().replace("tqdm>=4.65", "tqdm>=4.0")
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: env if self.name == "environment.yml"
                        else open(self, encoding="utf-8").read())
    assert environment_requirements() != pyproject_requirements()
