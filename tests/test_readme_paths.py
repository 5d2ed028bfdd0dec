"""Issue 23, item 3: the datasets the README and docs/USAGE.md name are the configs' own (a newcomer
who builds what the README says must not build again when a config runs), and the README holds
the set-up commands CI runs."""

import re

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from training.config import register_configs

DOCS = ("README.md", "docs/USAGE.md", "docs/TOOLS.md")
NOT_A_CONFIGS = {  # named on purpose as other datasets than the configs'
    "data/other",  # evaluate.py --data
    "data/lsa-9x9-10k-aug10-val1000",  # a copy with a val/ split needs a new path (docs/USAGE.md)
}


def config_paths() -> set[str]:
    register_configs()  # Hydra's `base`, which the task configs extend
    paths = set()
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        for path in (REPO / "config").glob("cfg_*.yaml"):
            for overrides in ([], ["device=cpu"]):
                raw = OmegaConf.to_container(compose(path.stem, overrides=overrides), resolve=True)
                paths.add(raw["data"]["path"])
    return paths


def test_every_dataset_the_docs_name_is_a_configs():
    known = config_paths()
    for doc in DOCS:
        named = set(re.findall(r"\bdata/[A-Za-z0-9._-]*[A-Za-z0-9]", (REPO / doc).read_text()))
        assert named - known - NOT_A_CONFIGS == set(), f"{doc} names datasets no config reads"
    assert {"data/lsa-9x9-10k-aug10", "data/sudoku-hard-22-26-1k-aug1000"} <= known


def readme_set_up_commands() -> list[str]:
    """The commands of the README's first code block (`## Set up`), comments left off."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_shows_the_set_up_commands_ci_runs_and_the_fast_subset():
    readme = (REPO / "README.md").read_text()
    commands = readme_set_up_commands()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install, full, fast = ('pip install -q torch==2.13.0 && pip install -q -e ".[dev]"', "python -m pytest -q -n 2",
                           'python -m pytest -q -n 2 -m "not slow"')
    assert commands == [install, full, fast]
    assert install in ci_lines and full in ci_lines  # CI runs exactly the README's install and full suite
    assert "python pretrain.py --config-name cfg_lsa\n" in readme or "python pretrain.py --config-name cfg_lsa " in readme


def test_the_dev_extra_brings_what_the_test_commands_use():
    """`-n 2` is pytest-xdist's: the dev extra that the README and CI install must bring it."""
    dev = re.search(r"^dev = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M).group(1)
    names = {re.split(r"[<>=!~\[ ;]", requirement.strip().strip('"'), maxsplit=1)[0].lower()
             for requirement in dev.split(",")}
    assert {"pytest", "pytest-xdist"} <= names, dev
