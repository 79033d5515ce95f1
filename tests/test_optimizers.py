"""Every optimizer and schedule option builds what its `_target_` names with its arguments; a new one
is one file (and, for a schedule, one function); a bad one stops with one line naming its key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_object

from conftest import CONF_DIR, compose_config

OPTIMIZERS = sorted(p.stem for p in (Path(CONF_DIR) / "optimizer").glob("*.yaml"))
SCHEDULES = sorted(p.stem for p in (Path(CONF_DIR) / "optimizer" / "schedule").glob("*.yaml"))


def built(cfg, steps_per_epoch: int = 10):
    from affectexp.training.optimizers import build_optimizer, check_optimizer_config

    check_optimizer_config(cfg.optimizer, cfg.trainer.epochs)
    return build_optimizer(cfg.optimizer, steps_per_epoch, cfg.trainer.epochs)


def learning_rate_at(optimizer, step: int) -> float:
    import keras

    rate = optimizer._learning_rate  # the float's variable, or the schedule itself
    value = rate(step) if callable(rate) else rate
    return float(keras.ops.convert_to_numpy(value))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_is_its_class_with_its_arguments(name, tmp_path):
    cfg = compose_config("train", tmp_path, [f"optimizer={name}"])
    optimizer = built(cfg)
    assert type(optimizer) is get_object(cfg.optimizer._target_)
    arguments = {k: v for k, v in cfg.optimizer.items() if not k.startswith("_") and k not in ("lr", "schedule")}
    for key, value in arguments.items():
        assert getattr(optimizer, key) == pytest.approx(value), f"optimizer={name}: {key}"
    peak = max(learning_rate_at(optimizer, step) for step in range(0, 10 * cfg.trainer.epochs, 5))
    assert peak == pytest.approx(cfg.optimizer.lr)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_starts_and_ends_as_documented(name, tmp_path):
    cfg = compose_config("train", tmp_path, [f"optimizer/schedule={name}", "optimizer.lr=0.1", "trainer.epochs=3"])
    optimizer = built(cfg)
    first, last = learning_rate_at(optimizer, 0), learning_rate_at(optimizer, 30)
    if name == "constant":
        assert first == last == pytest.approx(0.1)
    else:
        assert first == 0.0 and last == pytest.approx(0.0, abs=1e-6)  # warm-up from 0, decay to 0


def test_cosine_warms_up_linearly_then_decays_over_the_remaining_epochs():
    from affectexp.training.schedules import cosine

    warm = cosine(0.1, steps_per_epoch=10, epochs=3, warmup_epochs=1)
    assert [float(warm(s)) for s in (0, 5, 10, 20, 30)] == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-6)
    cold = cosine(0.1, steps_per_epoch=10, epochs=2, warmup_epochs=0)
    assert [float(cold(s)) for s in (0, 10, 20)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-6)


STEP_SCHEDULE = '''
import keras


def halving(lr: float, steps_per_epoch: int, epochs: int, *, every_epochs: int):
    period = every_epochs * steps_per_epoch
    boundaries = list(range(period, epochs * steps_per_epoch, period))
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [lr / 2**i for i in range(len(boundaries) + 1)])
'''


@pytest.fixture
def user_conf(tmp_path, monkeypatch):
    """A config folder of the user's on Hydra's search path, and tmp_path importable."""
    conf = tmp_path / "conf"
    (conf / "optimizer" / "schedule").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield conf
    sys.modules.pop("user_schedules", None)


def test_a_new_optimizer_is_one_file(user_conf, tmp_path):
    (user_conf / "optimizer" / "rmsprop.yaml").write_text(
        "defaults:\n  - schedule: cosine\n  - _self_\n\n_target_: keras.optimizers.RMSprop\n_partial_: true\n"
        "lr: 2.0e-3\nrho: 0.8\n")
    cfg = compose_config("train", tmp_path, [f"hydra.searchpath=[file://{user_conf}]", "optimizer=rmsprop"])
    optimizer = built(cfg)
    assert type(optimizer).__name__ == "RMSprop" and optimizer.rho == pytest.approx(0.8)
    assert learning_rate_at(optimizer, 10) == pytest.approx(2e-3)  # the end of cosine's one warm-up epoch


def test_a_new_schedule_is_one_file_and_one_function(user_conf, tmp_path):
    (tmp_path / "user_schedules.py").write_text(STEP_SCHEDULE)
    (user_conf / "optimizer" / "schedule" / "halving.yaml").write_text(
        "_target_: user_schedules.halving\n_partial_: true\nevery_epochs: 2\n")
    cfg = compose_config("train", tmp_path, [f"hydra.searchpath=[file://{user_conf}]", "optimizer=sgd",
                                             "optimizer/schedule=halving", "trainer.epochs=5"])
    optimizer = built(cfg)
    assert [learning_rate_at(optimizer, s) for s in (0, 20, 21, 41)] == pytest.approx([1e-2, 1e-2, 5e-3, 2.5e-3])
    cfg.optimizer.schedule.every_epochs = "two"
    from affectexp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"optimizer\.schedule\.every_epochs: .*user_schedules\.halving"):
        built(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer._target_=keras.optimizers.Adamx"], "optimizer._target_: cannot import 'keras.optimizers.Adamx'"),
    (["+optimizer.momentun=0.9"], "optimizer.momentun: keras.optimizers.Adam refused it"),
    (["optimizer=sgd", "optimizer.momentum=2"], "optimizer.momentum: keras.optimizers.SGD refused it"),
    (["optimizer.schedule._target_=affectexp.training.schedules.nope"], "optimizer.schedule._target_: cannot import"),
    (["+optimizer.schedule.warmup_epochs=1"], "optimizer.schedule.warmup_epochs: Key 'warmup_epochs' not in"),
    (["optimizer=sgd", "optimizer.schedule.warmup_epochs=two"], "optimizer.schedule.warmup_epochs: Value 'two'"),
    (["~optimizer.schedule"], "optimizer.schedule: not set"),
])
def test_a_bad_optimizer_or_schedule_is_one_line_naming_the_key(overrides, message, tmp_path):
    from affectexp.errors import ConfigError

    cfg = compose_config("train", tmp_path, overrides)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        built(cfg)
    assert "\n" not in str(raised.value)


def test_the_learning_rate_is_a_number_above_zero(tmp_path):
    from affectexp.config import check_values
    from affectexp.errors import ConfigError

    for value in ("fast", "0", "-1e-3", "true"):
        cfg = compose_config("train", tmp_path, [f"optimizer.lr={value}"])
        with pytest.raises(ConfigError, match=r"optimizer\.lr: .* a number above 0"):
            check_values(cfg)


def test_renamed_optimizer_keys_stop_before_training(tmp_path):
    from hydra.errors import ConfigCompositionException

    from affectexp.errors import ConfigError

    for old in ("optimizer.name=adamw", "optimizer.warmup_epochs=2", "optimizer.weight_decay=0.1"):
        with pytest.raises(ConfigCompositionException, match="Could not override"):
            compose_config("train", tmp_path, [old])
    cfg = compose_config("train", tmp_path, ["optimizer.schedule=cosine"])  # a node's value may be a string
    with pytest.raises(ConfigError, match=r"optimizer\.schedule: 'cosine' .*optimizer/schedule=cosine$"):
        built(cfg)
    assert compose_config("train", tmp_path, ["optimizer/schedule=cosine"]).optimizer.schedule.warmup_epochs == 1


def test_a_bad_optimizer_on_the_command_line_is_one_line_and_no_run(tmp_path):
    command = [sys.executable, "train.py", f"paths.root={tmp_path}", "optimizer._target_=keras.optimizers.Adamx"]
    result = subprocess.run(command, cwd=Path(CONF_DIR).parent, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "][ERROR]" in line]  # logging's, not TensorFlow's
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and "optimizer._target_: cannot import 'keras.optimizers.Adamx'" in errors[0]
    assert not (tmp_path / "mlflow.db").exists()  # stopped before MLflow was configured
