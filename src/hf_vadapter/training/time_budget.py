"""Train for a wall-clock budget: the learning-rate schedule and the stop follow the clock as well as the steps.

A fixed step count takes minutes on one CPU and hours on another (a bf16 LM on a CPU without native bf16 runs tens
of times slower). With `max_train_minutes`, the run stops when the budget is spent or at `max_steps`, whichever comes
first, and the cosine decay runs on `progress = max(step / max_steps, elapsed / budget)`, so a run cut by the clock
still ends at a low learning rate instead of in mid-stride. The step count then depends on the machine: the report
records how many steps ran.
"""

import math
import time

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback


class TrainingClock(TrainerCallback):
    """Measures the training time (from the first step) and stops the run once `budget_s` is spent."""

    def __init__(self, budget_s: float):
        if not budget_s > 0:
            raise ValueError(f"max_train_minutes must be positive, got {budget_s / 60!r}.")
        self.budget_s = budget_s
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def elapsed_fraction(self) -> float:
        return 0.0 if self.started is None else (time.perf_counter() - self.started) / self.budget_s

    def on_step_end(self, args, state, control, **kwargs):
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
