"""Write every "open this lesson elsewhere" link from one place: the repository's address below.

For each notebook in ``notebooks/`` it writes

- a badge row (Colab, Kaggle, SageMaker Studio Lab) as the notebook's first cell,
- a setup cell before its first code cell: on Colab or Kaggle it clones the repository (the lessons
  read its ``data/``, ``results/`` and ``checkpoints/``), installs only the packages the service
  lacks (its torch, ipywidgets and matplotlib stay as they are), enables Colab's widget manager and
  generates the embedded data; in a clone without ``make setup`` it puts the package on the path;
  locally it installs nothing. Every run then prints the lesson's expected run time per profile.
- notebook metadata asking Colab and Kaggle for a GPU,

the badge column of the README's lesson table, and the Jupyter Book's ``book/_config.yml`` and
``book/_toc.yml``. ``--check`` changes nothing and fails if any of them is stale (the tests run it).

    python tools/launch.py            # after changing REPOSITORY or adding a lesson
    python tools/launch.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

#: The one place that holds the repository's address (GitHub ``owner/name``) and its default branch.
REPOSITORY = "deeplab-lessons/deeplab-lessons"
BRANCH = "main"

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BADGE_TAG = "launch-badges"
SETUP_TAG = "launch-setup"

#: Notebook metadata: Colab opens the notebook with a T4 runtime, Kaggle with a GPU and internet (for the clone).
GPU_METADATA = {
    "accelerator": "GPU",
    "colab": {"gpuType": "T4", "provenance": []},
    "kaggle": {"accelerator": "nvidiaTeslaT4", "isGpuEnabled": True, "isInternetEnabled": True,
               "language": "python", "sourceType": "notebook"},
}


def github_url(path: str) -> str:
    """The file's page on GitHub (``path`` relative to the repository root)."""
    return f"https://github.com/{REPOSITORY}/blob/{BRANCH}/{path}"


def launch_urls(notebook: str) -> dict[str, str]:
    """Where ``notebook`` (a file name in ``notebooks/``) opens: service -> URL."""
    path = f"notebooks/{notebook}"
    return {
        "Colab": f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{path}",
        "Kaggle": f"https://kaggle.com/kernels/welcome?src={github_url(path)}",
        "SageMaker Studio Lab": f"https://studiolab.sagemaker.aws/import/github/{REPOSITORY}/blob/{BRANCH}/{path}",
    }


BADGE_IMAGES = {
    "Colab": "https://colab.research.google.com/assets/colab-badge.svg",
    "Kaggle": "https://kaggle.com/static/images/open-in-kaggle.svg",
    "SageMaker Studio Lab": "https://studiolab.sagemaker.aws/studiolab.svg",
}


def badge_row(notebook: str) -> str:
    """Markdown badges that open ``notebook`` on Colab, Kaggle and SageMaker Studio Lab."""
    return " ".join(f"[![Open in {service}]({BADGE_IMAGES[service]})]({url})"
                    for service, url in launch_urls(notebook).items())


SETUP_CELL = '''# Setup. On Colab or Kaggle (GPU runtime, internet on) this clones the lessons, installs only what the
# service lacks (its torch, ipywidgets and matplotlib stay) and generates the embedded data: about a minute.
# Locally, after `make setup`, it installs nothing.
import importlib.util, os, subprocess, sys
from pathlib import Path

REPOSITORY = "https://github.com/{repository}"
HOSTED = "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def hosted_setup(run=subprocess.run):
    here = Path.cwd()
    clone = here.parent if (here.parent / "pyproject.toml").is_file() else here / "{name}"   # a re-run: in the clone
    if not (clone / "pyproject.toml").is_file():
        run(["git", "clone", "--depth", "1", "--branch", "{branch}", REPOSITORY, str(clone)], check=True)
    missing = [pip for module, pip in (("scipy", "scipy"), ("tqdm", "tqdm"), ("PIL", "pillow"),
                                        ("ipywidgets", "ipywidgets"), ("skimage", "scikit-image"))
               if importlib.util.find_spec(module) is None]
    if missing:
        run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
    sys.path.insert(0, str(clone))
    os.chdir(clone / "notebooks")
    if "google.colab" in sys.modules:
        from google.colab import output
        output.enable_custom_widget_manager()   # the lessons' explorers are core ipywidgets


if HOSTED:
    hosted_setup()
elif importlib.util.find_spec("deeplab_lessons") is None and (Path.cwd().parent / "pyproject.toml").is_file():
    sys.path.insert(0, str(Path.cwd().parent))  # a clone without `make setup` (e.g. SageMaker Studio Lab)

from IPython.display import Markdown, display
from deeplab_lessons import config

print("data:", "real PASCAL VOC 2012" if config.is_real_voc(config.voc_root()) else "the embedded set",
      "| profile:", config.lesson_settings().profile, "| device:", config.device())
display(Markdown(config.budget_note("{lesson}")))'''


def setup_source(notebook: str) -> str:
    """The setup cell of ``notebook``."""
    return SETUP_CELL.format(repository=REPOSITORY, name=REPOSITORY.split("/")[1], branch=BRANCH,
                             lesson=Path(notebook).stem)


def _cell(kind: str, text: str, tag: str) -> dict:
    cell = {"cell_type": kind, "id": tag, "metadata": {"tags": [tag]}, "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _tagged(cells: list[dict], tag: str) -> int | None:
    return next((i for i, c in enumerate(cells) if tag in c.get("metadata", {}).get("tags", [])), None)


def updated_notebook(nb: dict, notebook: str) -> dict:
    """``nb`` with its badge cell, setup cell and GPU metadata as this script writes them (outputs kept)."""
    nb = json.loads(json.dumps(nb))
    cells = nb["cells"]
    badge = "<!-- " + BADGE_TAG + ": written by tools/launch.py -->\n" + badge_row(notebook)
    at = _tagged(cells, BADGE_TAG)
    if at is None:
        cells.insert(0, _cell("markdown", badge, BADGE_TAG))
    else:
        cells[at]["source"] = badge.splitlines(keepends=True)
    source = setup_source(notebook)
    at = _tagged(cells, SETUP_TAG)
    if at is None:
        first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
        cells.insert(first_code, _cell("code", source, SETUP_TAG))
    elif "".join(cells[at]["source"]) != source:
        cells[at]["source"] = source.splitlines(keepends=True)
        cells[at]["outputs"], cells[at]["execution_count"] = [], None
    setup = cells[_tagged(cells, SETUP_TAG)]          # collapsed: the lesson starts with the lesson
    setup["metadata"].setdefault("jupyter", {})["source_hidden"] = True
    setup["metadata"]["tags"] = [SETUP_TAG] + [t for t in setup["metadata"]["tags"] if t != SETUP_TAG] + (
        [] if "hide-input" in setup["metadata"]["tags"] else ["hide-input"])
    nb["metadata"].update(json.loads(json.dumps(GPU_METADATA)))
    return nb


LESSON_ROW = re.compile(r"^\| (\d\d) \| \[([^\]]+)\]\(notebooks/([\w.]+\.ipynb)\) \| (.*?) \|(?: .* \|)?$")


def updated_readme(text: str) -> str:
    """The README with a badge column in its lesson table."""
    lines = text.splitlines()
    out = []
    for line in lines:
        match = LESSON_ROW.match(line)
        if match:
            number, title, notebook, leave = match.groups()
            line = f"| {number} | [{title}](notebooks/{notebook}) | {leave} | {badge_row(notebook)} |"
        elif line.startswith("| # | notebook | you leave with |"):
            line = "| # | notebook | you leave with | open on |"
        elif line == "|---|---|---|" and out and out[-1].startswith("| # | notebook |"):
            line = "|---|---|---|---|"
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def book_files() -> dict[Path, str]:
    """``book/_config.yml`` and ``book/_toc.yml``: the executed notebooks as a website, launch buttons to Colab."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    config = f"""# Written by tools/launch.py: `make book` builds the committed notebooks (not re-executed) into build/book/.
title: DeepLab Lessons
author: DeepLab Lessons
only_build_toc_files: true
execute:
  execute_notebooks: "off"
repository:
  url: https://github.com/{REPOSITORY}
  branch: {BRANCH}
launch_buttons:
  notebook_interface: jupyterlab
  colab_url: https://colab.research.google.com
html:
  use_repository_button: true
sphinx:
  config:
    html_show_copyright: false
    suppress_warnings: ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
"""
    chapters = "\n".join(f"  - file: notebooks/{Path(n).stem}" for n in names[1:])
    toc = f"""# Written by tools/launch.py.
format: jb-book
root: notebooks/{Path(names[0]).stem}
chapters:
{chapters}
"""
    return {ROOT / "book" / "_config.yml": config, ROOT / "book" / "_toc.yml": toc}


def _notebook_text(nb: dict) -> str:
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"    # as nbformat writes it


def planned() -> dict[Path, str]:
    """Every file this script writes, with the text it should hold."""
    files = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        files[path] = _notebook_text(updated_notebook(json.loads(path.read_text()), path.name))
    readme = ROOT / "README.md"
    files[readme] = updated_readme(readme.read_text())
    files.update(book_files())
    return files


def _stale(path: Path, text: str) -> bool:
    if not path.is_file():
        return True
    if path.suffix == ".ipynb":                      # compare contents, not formatting
        return json.loads(path.read_text()) != json.loads(text)
    return path.read_text() != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    files = planned()
    stale = [path for path, text in files.items() if _stale(path, text)]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python tools/launch.py)")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
