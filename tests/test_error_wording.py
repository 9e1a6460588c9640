"""Library errors name arguments and settings in backticks; each command says its flags instead
(hpdm_cli.common.flags_for). Config sections and setting types come from the dataclasses' annotations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from hpdm_cli.common import flags_for, say_flags
from hpdm_core import config as config_lib
from hpdm_core.errors import BadInputError, MissingResourceError, check_count
from hpdm_core.metrics.options import EvalOptions
from tests.test_cli_train import hpdm


def test_flags_for_says_the_flag_and_keeps_the_exit_code():
    with pytest.raises(MissingResourceError, match=r"^give it as --i3d \(or --random-i3d\)$"):
        with flags_for({"i3d": "--i3d", "random_i3d_seed": "--random-i3d"}):
            raise MissingResourceError("give it as `i3d` (or `random_i3d_seed`)")
    original = BadInputError("`batch_size` must be at least 1")
    with pytest.raises(BadInputError) as caught:
        with flags_for({"num": "--num"}):  # names no setting of this map: the very error goes on
            raise original
    assert caught.value is original
    assert say_flags("lower `frames` or `framesize`", {"frames": "--frames"}) == "lower --frames or `framesize`"


def test_check_count_names_the_argument():
    check_count("num", 2, 2)
    for value, expected in ((1, "`num` must be at least 2, got 1"), (True, "`num` must be an integer, got True"),
                            (2.0, "`num` must be an integer, got 2.0")):
        with pytest.raises(BadInputError, match=expected):
            check_count("num", value, 2)
    with pytest.raises(BadInputError, match=r"`seed` must be in 0\.\.9, got 10"):
        check_count("seed", 10, 0, 9)


def test_eval_options_name_the_option_to_fix(tmp_path):
    cases = [(dict(random_i3d_seed=0, num=1), BadInputError, "`num` must be at least 2"),
             (dict(random_i3d_seed=0, resolution=4), BadInputError, "`resolution` must be at least 8"),
             (dict(random_i3d_seed=-1), BadInputError, "`random_i3d_seed` must be in 0.."),
             (dict(random_i3d_seed=0, batch_size=0), BadInputError, "`batch_size` must be at least 1"),
             (dict(), MissingResourceError, "give it as `i3d`"),
             (dict(i3d=tmp_path / "none.pt"), MissingResourceError, "none.pt not found"),
             (dict(random_i3d_seed=0, c3d=tmp_path / "c3d.pt"), MissingResourceError, "give it as `c3d`"),
             (dict(random_i3d_seed=0, device="tpu"), BadInputError, "`device` is 'tpu'")]
    for options, error, expected in cases:
        with pytest.raises(error, match=expected):
            EvalOptions(**options).validate()
    assert EvalOptions(classifier=tmp_path / "clf.pt").validate()  # the classifier alone needs no I3D


def test_the_commands_say_their_flags(tmp_path, capsys, monkeypatch):
    data = tmp_path / "none.h5"
    code, _, err = hpdm(capsys, monkeypatch, "train", "--run-dir", tmp_path / "run", "--set", "model.fusion=none")
    assert code == 2 and "--set and --batch-size change a base config: give --preset NAME or --config FILE" in err
    code, _, err = hpdm(capsys, monkeypatch, "eval-fvd", "--real", data, "--fake", data, "--random-i3d", 0,
                        "--num", 1)
    assert code == 2 and "--num must be at least 2, got 1" in err
    code, _, err = hpdm(capsys, monkeypatch, "train", "--preset", "tiny", "--run-dir", tmp_path / "run2",
                        "--init-from", tmp_path / "nowhere")
    assert code == 3 and f"--init-from {tmp_path / 'nowhere'} does not exist" in err
    assert "`" not in err.replace("`hpdm", "")  # no library name left unsaid


@dataclass
class Inner:
    size: list[int] = field(default_factory=lambda: [1, 2])
    rate: float = 0.5


@dataclass
class Outer:  # a section whose class name config.py has never heard of
    inner: Inner = field(default_factory=Inner)
    name: str = "x"


def test_config_sections_and_types_come_from_annotations():
    outer = config_lib._from_dict(Outer, {"inner": {"size": [3, 4]}, "name": "y"}, "")
    assert outer == Outer(Inner([3, 4], 0.5), "y")
    with pytest.raises(BadInputError, match=r"config section inner must be a table \(\[inner\]\), got 3"):
        config_lib._from_dict(Outer, {"inner": 3}, "")
    assert {f.name for f in dataclasses.fields(config_lib.Config)} == set(config_lib.field_types(config_lib.Config))

    cfg = config_lib.apply_overrides(config_lib.Config(), ["model.patch=8x16x16", "train.compile=yes",
                                                           "diffusion.rho=7", "model.fusion=shallow"])
    assert cfg.model.patch == [8, 16, 16] and cfg.train.compile is True and cfg.diffusion.rho == 7.0
    assert isinstance(cfg.diffusion.rho, float) and cfg.model.fusion == "shallow"
    for assignment, expected in (("model.num_levels=two", "cannot read model.num_levels='two' as int"),
                                 ("model.patch=a", "cannot read model.patch='a' as list"),
                                 ("train.compile=maybe", "cannot read train.compile='maybe' as bool"),
                                 ("model=3", "unknown config key 'model'"),
                                 ("model.patch.f=3", "unknown config key 'model.patch.f'"),
                                 ("nothing", "`overrides` take section.key=value")):
        with pytest.raises(BadInputError, match=expected):
            config_lib.apply_overrides(config_lib.Config(), [assignment])


def test_build_config_needs_a_base():
    with pytest.raises(BadInputError, match="give `preset_name` or `config_file`"):
        config_lib.build_config(overrides=["train.lr=1"])
    with pytest.raises(BadInputError, match="give `preset_name` or `config_file`"):
        config_lib.build_config()
    assert config_lib.build_config("tiny", batch_size=2).train.batch_size == 2
