"""Train for a wall-clock budget: the learning-rate schedule and the stop follow the clock as well as the steps.

A fixed step count takes minutes on one CPU and hours on another (a bf16 LM on a CPU without native bf16 runs tens
of times slower). With `max_train_minutes`, the run stops when the budget is spent or at `max_steps`, whichever comes
first, and the cosine decay runs on `progress = max(step / max_steps, elapsed / budget)`, so a run cut by the clock
still ends at a low learning rate instead of in mid-stride. The step count then depends on the machine: the report
records how many steps ran.

`reserve_steps` keeps time back for work after training (evaluation, say) whose cost scales with the model's speed
like a step does: the run stops once the time left would not cover that many more steps at the measured mean step
time.
"""

import math
import time

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback


class TrainingClock(TrainerCallback):
    """Measures the training time (from the first step) and stops the run once `budget_s`, less the time of
    `reserve_steps` more steps, is spent."""

    def __init__(self, budget_s: float, reserve_steps: int = 0):
        if not budget_s > 0:
            raise ValueError(f"max_train_minutes must be positive, got {budget_s / 60!r}.")
        if reserve_steps < 0:
            raise ValueError(f"time_reserve_steps must be 0 or more, got {reserve_steps!r}.")
        self.budget_s = budget_s
        self.reserve_steps = reserve_steps
        self.started = None
        self.steps_done = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.steps_done = 0

    def training_budget_s(self, elapsed_s: float) -> float:
        """The budget less the reserve, priced at the mean step time so far (the whole budget before any step)."""
        if self.steps_done == 0:
            return self.budget_s
        return max(self.budget_s - self.reserve_steps * elapsed_s / self.steps_done, 1e-9)

    def elapsed_fraction(self) -> float:
        if self.started is None:
            return 0.0
        elapsed_s = time.perf_counter() - self.started
        return elapsed_s / self.training_budget_s(elapsed_s)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_done += 1
        if self.elapsed_fraction() >= 1.0:
            control.should_training_stop = True
            control.should_save = True  # the last state is the model: save it like a last step
        return control


def cosine_with_clock(optimizer, num_warmup_steps: int, num_training_steps: int, clock: TrainingClock) -> LambdaLR:
    """Linear warm-up, then cosine decay to zero over whichever runs out first: the steps or the clock's budget."""

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        by_steps = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        progress = min(1.0, max(by_steps, clock.elapsed_fraction()))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
