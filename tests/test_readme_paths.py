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


def test_the_readme_shows_the_set_up_commands_ci_runs_and_the_fast_subset():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for command in ('pip install -q torch==2.13.0 && pip install -q -e ".[dev]"', "python -m pytest -q"):
        assert command in readme and command in ci
    assert 'python -m pytest -q -m "not slow"' in readme
    assert "python pretrain.py --config-name cfg_lsa\n" in readme or "python pretrain.py --config-name cfg_lsa " in readme
