import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, assert_one_line_error, run_in_process, run_module
from training.config import Config, ConfigError, validate_config

CONFIG_DIR = str(REPO / "config")


def composed(name, overrides=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=False)


# The typed defaults are the only defaults: tests/test_config_defaults.py.


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config").glob("cfg_*.yaml")))
def test_shipped_configs_validate(name):
    """Every shipped config composes, validates, names a builder for its data and its task's evaluator."""
    from evaluators.tasks import TASKS, get_task

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = validate_config(OmegaConf.to_container(compose(name), resolve=True))
    assert isinstance(cfg, Config) and cfg.data.builder in TASKS
    get_task(cfg.data.builder).config_class().model_validate({**cfg.data.build_args, "output_dir": "x"})
    assert cfg.evaluators == [{"name": cfg.data.builder}]


def test_lsa_config_is_the_seed_setup():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = validate_config(OmegaConf.to_container(compose("cfg_lsa"), resolve=True))
    assert cfg.data.build_args == {"n": 9, "max_cost": 100, "num_train": 10000, "num_test": 1000, "num_aug": 10, "seed": 0}
    assert cfg.train.ema and cfg.train.ema_rate == 0.999 and cfg.train.global_batch_size == 768
    assert (cfg.arch.hidden_size, cfg.arch.num_layers, cfg.arch.H_cycles, cfg.arch.L_cycles) == (512, 2, 3, 6)


@pytest.mark.parametrize(
    "overrides, culprit",
    [
        (["+train.lrr=1"], "train.lrr"),
        (["+arch.hidden_sise=3"], "arch.hidden_sise"),
        (["train.global_batch_size=abc"], "train.global_batch_size"),
        (["optim.lr=-1"], "optim.lr"),
        (["train.compile=maybe"], "train.compile"),
        (["arch.num_heads=5"], "divisible"),
        (["+evaluators=[{name: sudo}]"], "evaluators"),
        (["+train.inductor.coordinate_descent_tunning=true"], "train.inductor"),
        (["+train.inductor.triton.cudagraphs=true"], "ACT carry"),
        (["train.compile_mode=reduce-overhead"], "train.compile_mode"),
        (["train.compile_mode=max-autotune"], "CUDA graphs"),
    ],
)
def test_bad_config_names_the_field(overrides, culprit):
    raw = composed("cfg_lsa", overrides)
    with pytest.raises(ConfigError) as info:
        validate_config(OmegaConf.to_container(OmegaConf.create(raw), resolve=True))
    assert culprit in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_pretrain_rejects_bad_config_before_running(tmp_path):
    result = run_module("pretrain.py", "--config-name", "cfg_lsa_cpu", "+train.lrr=1", f"logging.runs_dir={tmp_path}",
                        f"data.path={tmp_path / 'data'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: config: train.lrr: Extra inputs are not permitted (got 1) (did you mean optim.lr?)"]
    assert not any(tmp_path.iterdir())  # nothing built or written
    result = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "train.lrr=1")  # a key absent from the YAML
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: config: train.lrr: no such config key (did you mean optim.lr?) (to add a new key, write +train.lrr=...)"]


@pytest.mark.parametrize("word, culprit", [
    ("=5", "override '=5': no key"),  # Hydra: "Config group override must be a string or a list. Got int"
    ("=", "override '=': no key"),
    ("+=1", "override '+=1': no key"),
    ("@=1", "override '@=1': no key"),
    ("~", "override '~': no key"),  # Hydra: "Could not delete ''"
    ("+", "override '+': mismatched input"),  # Hydra's line did not name the word
    (".=1", "override '.=1': unexpected character '.' at position 1"),  # Hydra: "LexerNoViableAltException: .=1: ^"
    ("a b=1", "override 'a b=1': unexpected character ' ' at position 2"),
    # a line break in the word: Hydra's message repeats the word, and was cut at the break
    # ("override 'train.lr=1\n2': LexerNoViableAltException: train.lr=1")
    ("train.lr=1\n2", "override 'train.lr=1\\n2': unexpected character '\\n' at position 11; an override is"),
    ("a=1\r2", "override 'a=1\\r2': unexpected character '\\r' at position 4; an override is"),
    # ... or in a quoted value: a config group's choice ("Could not find 'device/cpu"), a sweep
    ('device="cpu\n"', "override 'device=\"cpu\\n\"': 'cpu\\n' is not an option of the config group device; "
                       "choose one of cpu, gpu"),
    ('optim.lr=1,"x\ny"', "config: Ambiguous value for argument 'optim.lr=1,\"x\\ny\"'"),
    ("foo=", "foo: no such config key"),  # a top-level key without a dot: was a RecursionError traceback
    ("foo=bar", "foo: no such config key (to add a new key, write +foo=...)"),
])
@pytest.mark.parametrize("check", [False, True])
def test_a_malformed_override_word_is_named(word, culprit, check, tmp_path):
    argv = ["pretrain.py", *(["--check"] if check else []), "--config-name", "cfg_lsa_cpu",
            f"logging.runs_dir={tmp_path}", word]
    result = run_in_process(*argv)
    assert_one_line_error(result, culprit)
    assert not any(tmp_path.iterdir())


def test_inductor_options_are_set_before_compiling():
    import torch._inductor.config as inductor_config

    from training.engine.setup import apply_inductor_options

    raw = composed("cfg_lsa_cpu", ["+train.inductor.coordinate_descent_tuning=true", "+train.inductor.triton.unique_kernel_names=true"])
    cfg = validate_config(OmegaConf.to_container(OmegaConf.create(raw), resolve=True))
    saved = inductor_config.coordinate_descent_tuning, inductor_config.triton.unique_kernel_names
    try:
        inductor_config.coordinate_descent_tuning, inductor_config.triton.unique_kernel_names = False, False
        apply_inductor_options(cfg.train.inductor)
        assert inductor_config.coordinate_descent_tuning is True and inductor_config.triton.unique_kernel_names is True
    finally:
        inductor_config.coordinate_descent_tuning, inductor_config.triton.unique_kernel_names = saved


def test_every_typed_arch_key_can_be_overridden():
    raw = composed("cfg_lsa", ["arch.rope_theta=5000", "arch.rms_norm_eps=1e-6", "arch.q_loss_weight=0.25"])
    arch = validate_config(OmegaConf.to_container(OmegaConf.create(raw), resolve=True)).arch
    assert (arch.rope_theta, arch.rms_norm_eps, arch.q_loss_weight) == (5000, 1e-6, 0.25)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config").glob("cfg_*_cpu.yaml")))
def test_cpu_presets_run_on_the_cpu_with_auto_threads(name):
    raw = composed(name)
    assert raw["train"]["device"] == "cpu" and raw["train"]["num_threads"] == "auto"


def test_eval_max_examples_scores_a_subset(tmp_path):
    from conftest import tiny_config
    from training.loop import train

    result = train(tiny_config(tmp_path, "train.max_steps=2", "train.eval_interval=2", "train.eval_max_examples=7",
                               "logging.run_name=sub"))
    assert result["eval/examples"] == 7 and "eval/lsa/optimal_cost_rate" in result
