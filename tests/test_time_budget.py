"""`max_train_minutes`: the run stops when its wall-clock budget is spent, and the cosine decay follows the clock."""

import pytest
import torch

from hf_vadapter.training import run_training
from hf_vadapter.training import time_budget
from hf_vadapter.training.time_budget import TrainingClock, cosine_with_clock
from test_training_helpers import arguments, bases  # noqa: F401


class FakeClock:
    """perf_counter that advances one second per call."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_schedule_decays_over_whichever_runs_out_first(monkeypatch):
    clock = TrainingClock(budget_s=100.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = cosine_with_clock(optimizer, num_warmup_steps=2, num_training_steps=102, clock=clock)
    factor = schedule.lr_lambdas[0]
    assert factor(1) == 0.5  # warm-up is counted in steps
    assert factor(52) == pytest.approx(0.5)  # half the steps, no time spent yet (clock not started)
    monkeypatch.setattr(clock, "elapsed_fraction", lambda: 0.5)
    assert factor(2) == pytest.approx(0.5)  # half the budget spent after no decay steps
    monkeypatch.setattr(clock, "elapsed_fraction", lambda: 1.5)
    assert factor(10) == pytest.approx(0.0)  # past the budget: the rate is spent


def test_a_run_stops_when_its_budget_is_spent_and_saves_its_adapter(bases, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(time_budget.time, "perf_counter", FakeClock())
    model_args, data_args, training_args = arguments(
        bases, tmp_path / "run", max_steps=50, max_train_minutes=6 / 60, lr_scheduler_type="cosine"
    )
    run = run_training(model_args, data_args, training_args)
    steps = run.trainer.state.global_step
    assert 1 <= steps < 50  # six fake seconds, at least one read per step
    assert run.trainer.lr_scheduler.get_last_lr()[0] < training_args.learning_rate / 2
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_the_budget_needs_the_cosine_schedule(bases, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="lr_scheduler_type='cosine'"):
        arguments(bases, tmp_path / "run", max_train_minutes=1.0, lr_scheduler_type="linear")


def test_the_reserve_keeps_back_the_time_of_that_many_steps(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(time_budget.time, "perf_counter", lambda: now["t"])
    clock = TrainingClock(budget_s=100.0, reserve_steps=20)
    clock.on_train_begin(None, None, None)
    assert clock.elapsed_fraction() == 0.0
    control = type("Control", (), {"should_training_stop": False, "should_save": False})()
    for step in range(1, 80):  # two seconds a step: the reserve is 40 s, so training stops at 60 s
        now["t"] = 2.0 * step
        clock.on_step_end(None, None, control)
        if control.should_training_stop:
            break
    assert step == 30 and control.should_save
    assert clock.elapsed_fraction() == pytest.approx(1.0)


def test_a_negative_reserve_is_refused():
    with pytest.raises(ValueError, match="time_reserve_steps"):
        TrainingClock(budget_s=10.0, reserve_steps=-1)
