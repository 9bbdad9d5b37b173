"""DDIM schedule arithmetic and DDIM inversion (deterministic encoding of a latent to noise).

The methods are written against what a schedule offers: ``timesteps``, ``tail``, ``previous``,
``timestep_at``, ``level`` (the noise level a prediction is converted at), ``noised`` (the
forward process), ``predict`` (the model's prediction in the space ``step`` takes) and ``step``.
``Schedule`` is DDIM's over a DDPM training schedule, in noise (epsilon) space;
engine.flow.FlowSchedule is the flow-matching one, in velocity space. ``ddim_invert`` runs on
either (on a flow schedule it is the flow-ODE inversion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TERMINAL_ALPHA = 2.0**-24  # the least cumulative alpha a step divides by (fp16's least subnormal)


@dataclass(frozen=True)
class Schedule:
    """The DDIM timesteps of a ``steps``-step run over a diffusers scheduler's noise levels."""

    timesteps: tuple[int, ...]  # descending, as decoding visits them
    alphas_cumprod: torch.Tensor  # float64, one per training timestep
    final_alpha: float  # level reached after the last step (the "clean" end of the run)
    stride: int  # training timesteps between two DDIM steps

    @classmethod
    def from_config(cls, scheduler_config: dict, steps: int) -> "Schedule":
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(steps)
        # A zero-terminal-SNR schedule ends at alpha 0, where the step's division by sqrt(alpha)
        # is 0/0; diffusers' Euler scheduler keeps that level just above 0 for the same reason.
        alphas = scheduler.alphas_cumprod.double().clamp(min=TERMINAL_ALPHA)
        return cls(
            timesteps=tuple(int(t) for t in scheduler.timesteps),
            alphas_cumprod=alphas,
            final_alpha=float(scheduler.final_alpha_cumprod),
            stride=scheduler.config.num_train_timesteps // steps,
        )

    def alpha(self, t: int) -> float:
        """Cumulative alpha at timestep ``t``; below 0 it is the final (clean) level."""
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha

    def previous(self, t: int) -> int:
        """The timestep one DDIM step closer to the clean image (negative past the end).

        The schedule's own next timestep: "trailing" spacing rounds its steps, so they are not
        all ``stride`` apart (3 steps: 999, 666, 332)."""
        if t not in self.timesteps:
            return t - self.stride
        index = self.timesteps.index(t) + 1
        return self.timesteps[index] if index < len(self.timesteps) else -1

    def tail(self, count: int) -> tuple[int, ...]:
        """The last ``count`` timesteps: where a run encoded to ratio count/steps starts decoding."""
        return self.timesteps[len(self.timesteps) - count:]

    def timestep_at(self, ratio: float) -> int:
        """The training timestep at a noise ratio in [0, 1] (0.5 = half way to pure noise)."""
        last = len(self.alphas_cumprod) - 1
        return max(0, min(last, round(ratio * last)))

    def level(self, t: int) -> float:
        """The noise level predictions at ``t`` are converted at: the cumulative alpha."""
        return self.alpha(t)

    def noised(self, z0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """``z0`` noised to timestep ``t`` with ``noise`` (the forward process)."""
        return add_noise(z0, noise, self.alpha(t))

    def predict(self, ctx, latents: torch.Tensor, t: int, cond, **kwargs) -> torch.Tensor:
        """The noise predicted at ``latents`` read as being at ``t``: what ``step`` takes."""
        return ctx.predict_noise(latents, t, cond, self.alpha(t), **kwargs)

    def step(self, x: torch.Tensor, eps: torch.Tensor, t: int, t_next: int, eta: float = 0.0,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` moved from timestep ``t`` to ``t_next`` along ``eps`` (ddim_step)."""
        return ddim_step(x, eps, self.alpha(t), self.alpha(t_next), eta, noise)


def add_noise(z0: torch.Tensor, noise: torch.Tensor, alpha: float) -> torch.Tensor:
    """``z0`` noised to cumulative-alpha level ``alpha`` (the forward process, with ``noise``)."""
    return alpha**0.5 * z0 + (1.0 - alpha) ** 0.5 * noise


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_t: float, alpha_next: float,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Move ``x`` from noise level alpha_t to alpha_next along the predicted noise ``eps``.

    With alpha_next > alpha_t this denoises (sampling); with alpha_next < alpha_t it is the
    inversion step. ``eta`` > 0 adds DDIM's stochastic term (sampling only).
    """
    x0 = (x - (1.0 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
    sigma = 0.0
    if eta > 0 and noise is not None and alpha_next > alpha_t:
        sigma = eta * ((1 - alpha_next) / (1 - alpha_t) * (1 - alpha_t / alpha_next)) ** 0.5
    direction = max(0.0, 1.0 - alpha_next - sigma**2) ** 0.5 * eps
    out = alpha_next**0.5 * x0 + direction
    if sigma:
        out = out + sigma * noise
    return out


def ddim_invert(ctx, z0: torch.Tensor, schedule: Schedule, count: int,
                embeddings: torch.Tensor) -> list[torch.Tensor]:
    """Encode ``z0`` through the last ``count`` timesteps (clean to noisy).

    Returns the trajectory [z at final level, z at the smallest t, ..., z at the largest t]:
    entry k+1 is the latent at ``schedule.tail(count)[-(k+1)]``; decoding blends with it.
    """
    trajectory = [z0]
    x = z0
    ascending = list(reversed(schedule.tail(count)))
    for index, t in enumerate(ascending):
        prediction = schedule.predict(ctx, x, t, embeddings)  # the model reads x as being at t
        x = schedule.step(x, prediction, schedule.previous(t), t)
        trajectory.append(x)
        ctx.step(index + 1, count)
    return trajectory
