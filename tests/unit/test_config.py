import pytest
from hydra.errors import HydraException
from omegaconf.errors import ValidationError

from pdiff.config import Stage, validate
from pdiff.config.command_line import sweep_dirname
from pdiff.errors import ConfigError
from pdiff.generators import design_class
from pdiff.pipeline.run import preflight, run_pipeline
from tests.helpers.configs import CONFIGS, compose_config

GROUPS = [
    "task",
    "generator",
    "ae",
    "denoiser",
    "diffusion",
    "sampler",
    "trainer",
    "logger",
    "experiment",
]
DESIGN_OF = {
    "ae=token": "generator=token",
    "denoiser=window": "generator=token",
    "denoiser=velocity": "generator=flow",
    "sampler=euler": "generator=flow",
    "sampler=heun": "generator=flow",
}


@pytest.mark.parametrize(
    "group, option", [(g, p.stem) for g in GROUPS for p in sorted((CONFIGS / g).glob("*.yaml"))]
)
def test_every_option_of_every_group_composes_and_validates(group, option, tmp_path):
    choice = f"{group}={option}"
    design = [DESIGN_OF[choice]] if choice in DESIGN_OF else []
    cfg = compose_config([*design, choice, f"paths.output_dir={tmp_path}"])
    validate(cfg)
    design_class(cfg)


def test_defaults_are_the_reference_choice(tmp_path):
    bare = compose_config(
        [f"paths.output_dir={tmp_path}"], test_task=False
    )  # `python launch/sweep.py`: make run's job
    assert (bare.task.name, bare.data.name.value, bare.generator.design) == (
        "mnist1d_mlp",
        "mnist1d",
        "flow",
    )
    assert (
        bare.task.collect.runs == 10 and bare.task.collect.lr == 0.5
    )  # a zoo that can discriminate
    cfg = compose_config(["task=digits_cnn", f"paths.output_dir={tmp_path}"])
    assert cfg.task.name == "digits_cnn" and cfg.task.param.k == 200
    assert list(cfg.task.param.layers) == ["bn3", "bn4"]
    assert (
        cfg.diffusion.timesteps == 1000
        and cfg.diffusion.beta_start == 1e-4
        and cfg.diffusion.beta_end == 2e-2
    )
    cifar = compose_config(["task=cifar100_resnet18", f"paths.output_dir={tmp_path}"])
    assert (
        list(cifar.task.param.layers) == ["layer4.1.bn1", "layer4.1.bn2"]
        and cifar.task.param.k == 200
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.zero_stage=4"], r"trainer.zero_stage=4 is invalid: must be 0, 1, 2 or 3"),
        (
            ["trainer.zero_stage=2", "trainer.offload_params=true"],
            r"trainer.offload_params=True is invalid: needs "
            r"trainer.zero_stage=3 \(it is 2\)",
        ),
        (
            ["trainer.zero_stage=0", "trainer.offload_optimizer=true"],
            r"trainer.offload_optimizer=True is invalid",
        ),
        (["trainer.grad_accum=0"], r"trainer.grad_accum=0 is invalid"),
        (["denoiser.compile=true"], r"denoiser.compile=True is invalid: needs trainer=plain"),
    ],
)
def test_deepspeed_settings_are_checked_before_any_work(overrides, message, tmp_path):
    cfg = compose_config(["trainer=deepspeed", *overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_unknown_task_lists_the_options():
    with pytest.raises(HydraException, match="task/nope"):
        compose_config(["task=nope"])


def test_unknown_key_and_bad_enum_fail_at_compose_time():
    with pytest.raises(HydraException, match="task.param.kk"):
        compose_config(["task.param.kk=3"])
    with pytest.raises((ValidationError, HydraException), match="stage"):
        compose_config(["stage=everything"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.param.k=0", r"task.param.k=0 is invalid: must be an integer >= 2"),
        ("generate.n=0", r"generate.n=0 is invalid"),
        ("evaluate.chunk_size=0", r"evaluate.chunk_size=0 is invalid: must be >= 1"),
        ("task.param.k=1", r"task.param.k=1 is invalid: must be an integer >= 2"),
        ("ae.optim.lr=-1", r"ae.optim.lr=-1.0 is invalid"),
        ("trainer.zero_stage=2", r"trainer.zero_stage=2 is invalid: needs trainer=deepspeed"),
        (
            "trainer.precision=fp16",
            r"trainer.precision=.*fp16.* is invalid: needs trainer=deepspeed",
        ),
        (
            "task.precision=fp16",
            r"task.precision='fp16' is invalid: is not offered for the task network",
        ),
        (
            "cluster.tasks_per_node=2",
            r"cluster.tasks_per_node=2 is invalid: .*needs trainer=deepspeed",
        ),
    ],
)
def test_semantic_validation_names_key_value_and_rule(override, message, tmp_path):
    cfg = compose_config([override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
        design_class(cfg)  # the design checks its own groups (ae.* for the latent design)


def test_layer_pattern_matching_nothing_stops_before_any_work(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config(["task.param.layers=[bn3,conv9]", f"paths.output_dir={out}"])
    with pytest.raises(
        ConfigError, match=r"task.param.layers pattern 'conv9' matches no parameter"
    ):
        run_pipeline(cfg)
    assert not out.exists()


@pytest.mark.parametrize("task", ["cifar100_resnet18", "cifar10_resnet18", "mnist_cnn"])
def test_missing_data_root_names_path_and_how_to_get_it(task, tmp_path):
    missing = tmp_path / "nowhere"
    cfg = compose_config(
        [f"task={task}", f"data.root={missing}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ConfigError, match=rf"data.root='{missing}'.*download=True"):
        preflight(cfg, [Stage.collect])
    unset = compose_config([f"task={task}", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="data.root is not set"):
        run_pipeline(unset)
    assert not (tmp_path / "run").exists()


def test_npz_task_without_file_is_an_error(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={tmp_path / 'x.npz'}", f"paths.output_dir={out}"]
    )
    with pytest.raises(ConfigError, match=r"data.path='.*x.npz' does not exist"):
        run_pipeline(cfg)
    assert not out.exists()


def test_output_dir_that_is_a_file_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(
        ConfigError, match=r"paths.output_dir='.*results.txt' is invalid: is an existing file"
    ):
        run_pipeline(compose_config([f"paths.output_dir={target}"]))
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    "net, message",
    [
        (
            "{_target_: no_such_module.Net}",
            r"task.net._target_='no_such_module.Net' cannot be imported",
        ),
        (
            "{_target_: pdiff.data.tasknets.digits_cnn, depth: 3}",
            r"task.net._target_='pdiff.data.tasknets.digits_cnn' does not accept the arguments",
        ),
        (
            "{_target_: collections.OrderedDict}",
            r"task.net._target_='collections.OrderedDict' returned OrderedDict",
        ),
    ],
)
def test_bad_network_target_stops_before_any_work_naming_the_key(net, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        run_pipeline(compose_config([f"task.net={net}", f"paths.output_dir={out}"]))
    assert not out.exists()


def test_a_network_given_whole_replaces_the_task_network_node(tmp_path):
    cfg = compose_config(
        [
            "task=npz_mlp",
            "task.net={_target_: mymod.MyNet, width: 24}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert dict(cfg.task.net) == {
        "_target_": "mymod.MyNet",
        "width": 24,
    }  # npz_mlp's `hidden` is gone


def test_an_option_of_another_design_names_the_design_it_belongs_to(tmp_path):
    cfg = compose_config(["ae=token", f"paths.output_dir={tmp_path}"])
    with pytest.raises(
        ConfigError, match=r"ae=token does not fit generator=latent.*belongs to generator=token"
    ):
        preflight(cfg, [Stage.train])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["ae.latent_dim=30"],
            r"ae.latent_dim=30 is invalid: must be a multiple of ae.latent_channels=4",
        ),
        (["ae=pdiff_v1", "ae.stride=1"], r"ae.stride=1 is invalid: must be >= 2"),
        (["generator=token", "denoiser.window=0"], r"denoiser.window=0 is invalid"),
        (
            ["generator=token", "denoiser.code.temperature=0"],
            r"denoiser.code.temperature=0.0 is invalid: must be > 0",
        ),
        (
            ["generator=token", "denoiser.code.model=ddpm"],
            r"generate.target_quantile=1.0 needs a generator trained on the checkpoints' accuracies "
            r".*generator=token denoiser.code.model=flow",
        ),
        (
            ["generator=token", "denoiser.heads=3"],
            r"denoiser.width=128 is invalid: must be a multiple of denoiser.heads=3",
        ),
        (
            ["sampler=ddim", "sampler.steps=5000"],
            r"sampler.steps=5000 is invalid: must be in \[1, diffusion.timesteps",
        ),
    ],
)
def test_design_settings_are_checked_by_their_design(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        preflight(compose_config([*overrides, f"paths.output_dir={tmp_path}"]), [Stage.train])


def test_a_sweep_point_whose_overrides_do_not_fit_a_file_name_gets_a_short_unique_folder():
    short = "seed=1,trainer=deepspeed"
    assert sweep_dirname(short) == short
    long_names = [
        ",".join(f"evaluate.baselines.option_{i}={value}" for i in range(12)) for value in (1, 2)
    ]
    folders = [sweep_dirname(name) for name in long_names]
    assert all(len(folder.encode()) <= 200 for folder in folders) and folders[0] != folders[1]
    assert folders[0].startswith("evaluate.baselines.option_0=1,") and folders[0] == sweep_dirname(
        long_names[0]
    )
    assert len(sweep_dirname("é" * 150).encode()) <= 200  # cut on a character, never inside one
