"""Defaults live in one place, the typed models (issue 19, item 3).

training/config.py builds Hydra's `base` config and the `arch/<name>` options from the typed
models (ConfigStore); config/*.yaml hold only what a recipe changes. A YAML key whose value is
what the config would have without it (the typed default, or what the file's parent already
sets) fails here. `arch` is one typed family per `name`.
"""

import shutil

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from models import MODELS, validate_arch
from training.config import Config, ConfigError, section_models, validate_config

CONFIG_DIR = REPO / "config"
SHIPPED = sorted(str(p.relative_to(CONFIG_DIR)) for p in [*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("arch/*.yaml"),
                                                           *CONFIG_DIR.glob("device/**/*.yaml")])
# the task configs with a device=cpu part, config/device/<task>/cpu.yaml
DEVICE_TASKS = sorted(p.parent.name for p in CONFIG_DIR.glob("device/*/cpu.yaml"))


def composed(config_dir, name, overrides=()):
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        raw = OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)
    raw.pop("hydra", None)
    return raw


def field_values(raw):
    """A composed config as {field: value}, one entry per typed field ("train.seed", "arch.hidden_size",
    "evaluators"); arch as validated (a default spelt another way, e.g. puzzle_emb_ndim, compares equal)."""
    values = {}
    for section, value in raw.items():
        if section == "arch":
            try:
                value = validate_arch(value).model_dump()
            except ValueError:
                pass
        if isinstance(value, dict) and (section in section_models() or section == "arch"):
            values.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            values[section] = value
    return values


def set_fields(relpath, body):
    """The typed fields a config file sets (its defaults list and Hydra's section aside)."""
    if relpath.startswith("arch/"):
        return [f"arch.{k}" for k in body if k != "defaults"]
    keys = []
    for section, value in body.items():
        if section in ("defaults", "hydra"):
            continue
        keys += [f"{section}.{k}" for k in value] if isinstance(value, dict) else [section]
    return keys


def restated(config_dir, relpath, tmp_path):
    """The keys of config_dir/relpath whose value the config would have without them: the file
    composed as it is against the same file holding only its defaults list."""
    body = yaml.safe_load((config_dir / relpath).read_text()) or {}
    copy = tmp_path / "bare"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(config_dir, copy)
    (copy / relpath).write_text(yaml.safe_dump({"defaults": body["defaults"]} if "defaults" in body else {}))
    if relpath.startswith("arch/"):
        uses = [("base", [f"arch={relpath[5:-5]}"])]
    elif relpath.startswith("device/"):  # device/<option>.yaml in every task config, device/<task>/<option>.yaml in its own
        *task, option = relpath[len("device/"):-5].split("/")
        uses = [(f"cfg_{t}", [f"device={option}"]) for t in (task or DEVICE_TASKS)]
    else:
        uses = [(relpath[:-5], [])]
    found = None
    for name, overrides in uses:  # restated: the same without the key wherever the file is used
        full, bare = (field_values(composed(d, name, overrides)) for d in (config_dir, copy))
        keys = {key for key in set_fields(relpath, body) if key in bare and full.get(key) == bare[key]}
        found = keys if found is None else found & keys
    return sorted(found)


@pytest.mark.parametrize("relpath", SHIPPED)
def test_no_shipped_yaml_restates_a_default(relpath, tmp_path):
    assert restated(CONFIG_DIR, relpath, tmp_path) == [], f"config/{relpath} restates a default"


def test_the_check_finds_a_restated_default(tmp_path):
    """A key equal to the typed default (or to the parent's value) is found; one that undoes a
    parent's change (cfg_sudoku_cpu's arch.pos_encodings: rope) is not."""
    mine = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, mine)
    (mine / "cfg_mine.yaml").write_text("defaults:\n  - cfg_sudoku\n  - _self_\n"
                                        "optim:\n  lr: 1e-4\n  beta1: 0.8\n"
                                        "train:\n  eval_interval: 5000\n"
                                        "arch:\n  pos_encodings: rope\n  hidden_size: 512\n  puzzle_emb_ndim: ${.hidden_size}\n")
    (mine / "arch" / "trm_big.yaml").write_text("defaults:\n  - trm\n  - _self_\nhidden_size: 1024\nnum_heads: 8\n")
    assert sorted(restated(mine, "cfg_mine.yaml", tmp_path)) == [
        "arch.hidden_size", "arch.puzzle_emb_ndim", "optim.lr", "train.eval_interval"]
    assert restated(mine, "arch/trm_big.yaml", tmp_path) == ["arch.num_heads"]


def test_the_check_covers_the_device_group(tmp_path):
    """A device option's key that changes nothing wherever the option is used is found: one every
    task's own part overrides, or one equal to the task's value."""
    mine = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, mine)
    cpu = (mine / "device" / "cpu.yaml").read_text()
    (mine / "device" / "cpu.yaml").write_text(cpu + "logging:\n  project: overridden-by-every-task\n")
    lsa = (mine / "device" / "lsa" / "cpu.yaml").read_text()
    (mine / "device" / "lsa" / "cpu.yaml").write_text(lsa + "evaluators:\n  - name: lsa\n")
    assert restated(mine, "device/cpu.yaml", tmp_path) == ["logging.project"]
    assert restated(mine, "device/lsa/cpu.yaml", tmp_path) == ["evaluators"]


def test_device_cpu_is_the_cpu_preset():
    """`cfg_<task> device=cpu` composes exactly `cfg_<task>_cpu`, a CPU run; device=gpu is the task's recipe."""
    for task in DEVICE_TASKS:
        preset = composed(CONFIG_DIR, f"cfg_{task}_cpu")
        assert composed(CONFIG_DIR, f"cfg_{task}", ["device=cpu"]) == preset
        assert preset["train"]["device"] == "cpu" and preset["train"]["num_threads"] == "auto"
        assert composed(CONFIG_DIR, f"cfg_{task}_cpu", ["device=gpu"]) == composed(CONFIG_DIR, f"cfg_{task}")
        assert preset["data"]["path"] != composed(CONFIG_DIR, f"cfg_{task}")["data"]["path"]
        validate_config(preset)


@pytest.mark.parametrize("recipe, differs", [
    ("lsa_400s", {"train.max_train_seconds"}),
    ("sudoku_400s", {"train.max_train_seconds", "optim.lr_schedule_clock", "train.max_steps"}),
    ("maze_400s", {"train.max_train_seconds"})])
def test_a_budget_recipe_on_the_cpu_is_its_tasks_cpu_preset_with_the_budget(recipe, differs):
    """`cfg_<task>_400s device=cpu` is `cfg_<task>_cpu` (model, data, LR, warm-up, steps) with the
    400-second budget (Sudoku: and the LR's cosine over it by the clock, max_steps only a cap); the
    recipe's own values come after the preset's in its defaults, so its device/<recipe>/cpu.yaml
    sets the preset's back, and nothing of the GPU recipe may leak through."""
    task = recipe.removesuffix("_400s")
    cpu = field_values(composed(CONFIG_DIR, f"cfg_{recipe}", ["device=cpu"]))
    preset = field_values(composed(CONFIG_DIR, f"cfg_{task}_cpu"))
    assert {k for k in cpu.keys() | preset.keys() if cpu.get(k) != preset.get(k)} == differs
    assert cpu["train.max_train_seconds"] == 400 and cpu["train.device"] == "cpu"


def test_base_holds_every_typed_field_with_its_default():
    """The generated `base` and `arch/<name>` configs: every field of every section and family,
    with the typed default (required fields ???), so `key=value` works without `+` for each."""
    for name, (config_cls, _) in MODELS.items():
        raw = composed(CONFIG_DIR, "base", [f"arch={name}"])
        assert set(raw) == set(Config.model_fields)
        assert raw["arch"] == {k: f.get_default() for k, f in config_cls.model_fields.items()}
        for section, model in section_models().items():
            assert raw[section] == {k: "???" if f.is_required() else f.get_default(call_default_factory=True)
                                    for k, f in model.model_fields.items()}, section
    assert raw["data"]["path"] == "???" and raw["evaluators"] == []
    assert not (CONFIG_DIR / "base.yaml").exists()
    assert not any((CONFIG_DIR / "arch" / f"{name}.yaml").exists() for name in MODELS)


def test_arch_is_typed_per_family():
    """Config.arch is the registry's union, told apart by name: each validated arch is its family's
    config; a field of another family is one line naming the field and the family that has it."""
    import typing

    union = typing.get_args(Config.model_fields["arch"].annotation)
    assert set(union) == {config for config, _ in MODELS.values()}
    for name, (config_cls, _) in MODELS.items():
        raw = composed(CONFIG_DIR, "cfg_lsa", [f"arch={name}"])
        assert type(validate_config(raw).arch) is config_cls
    raw = composed(CONFIG_DIR, "cfg_lsa", ["+arch.H_layers=2"])
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    message = str(info.value)
    assert "arch.H_layers" in message and "arch=hrm" in message and "\n" not in message


def test_override_of_another_familys_field_names_it(capsys):
    import pretrain

    assert pretrain.cli(["--config-name", "cfg_lsa", "--cfg", "job", "arch.H_layers=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: arch.H_layers: no such config key (H_layers is a field of arch hrm, not trm: "
                   "arch=hrm) (to add a new key, write +arch.H_layers=...)"]


def test_a_checkpoint_config_of_before_resumes_unchanged():
    """Runs recorded puzzle_emb_ndim as the number (the old YAML's ${.hidden_size}); the typed
    default None validates to the same number, so a resume sees no change in arch."""
    cfg = validate_config(composed(CONFIG_DIR, "cfg_lsa_cpu"))
    recorded = cfg.to_dict()
    assert recorded["arch"]["puzzle_emb_ndim"] == recorded["arch"]["hidden_size"] == 96
    assert validate_config(recorded).to_dict() == recorded


def test_a_config_dir_extends_base(tmp_path):
    """A user's --config-dir config extends the generated `base` directly (the guard's loader sees it)."""
    from training.hydra_guard import ConfigSearch, compose_config

    (tmp_path / "mine.yaml").write_text("defaults:\n  - base\n  - override arch: hrm\n  - _self_\n"
                                        "data:\n  path: somewhere\ntrain:\n  max_steps: 3\narch:\n  H_cycles: 1\n")
    raw = compose_config("mine", ["arch.L_layers=2"], ConfigSearch.from_flags(None, str(tmp_path)))
    cfg = validate_config(raw)
    assert (cfg.arch.name, cfg.arch.H_cycles, cfg.arch.L_layers, cfg.arch.H_layers) == ("hrm", 1, 2, 4)


def test_a_field_without_default_left_unset_is_one_line(capsys):
    """data.path has no default: a config that extends base without setting it stops before anything
    runs, naming the key (Hydra would leave its ??? in place)."""
    import pretrain

    assert pretrain.cli(["--config-name", "base", "train.max_steps=3", "--cfg", "job"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: config: data.path: has no default and no value; set it in the config or on the command line "
        "(data.path=...)"]
