"""The flow-matching schedule: the sigmas a run visits and the step arithmetic of flow models.

A flow-matching model (FLUX.2, SD3, Z-Image) predicts the velocity u = eps - x0 along the
straight path x_s = (1 - s) x0 + s eps (s: the flow time or sigma, 1 = pure noise). A
``FlowSchedule`` offers what engine.inversion.Schedule offers, so DiffEdit, SDEdit and Blended
run on it unchanged:

- ``timesteps``: descending model timesteps (s * num_train_timesteps, as diffusers' scheduler
  gives them); ``tail(count)``, ``previous(t)`` (-1 past the last: the clean end, s = 0) and
  ``timestep_at(ratio)`` as on the DDIM schedule;
- ``level(t)``: the sigma at t (what ``RunContext.predict_noise`` converts with);
- ``noised(z0, noise, t)``: (1 - s) z0 + s noise, the forward path (diffusers' ``scale_noise``);
- ``predict(ctx, x, t, cond)``: the model's velocity (``RunContext.predict_velocity``), the
  prediction ``step`` takes. Not the noise: at s = 1 the noise x + (1 - s) u no longer holds u;
- ``step(x, u, t, t_next, eta, noise)``: the Euler step x + (s_next - s) u, decoding (s falls)
  or inverting (s rises: the flow-ODE inversion, the model read at the level it arrives at, as
  DDIM inversion does). ``eta`` > 0 adds DDIM's stochastic term of the equivalent
  variance-preserving process (x_s / sqrt((1 - s)^2 + s^2)); eta 0 is exactly Euler.

The sigmas come from diffusers' FlowMatchEulerDiscreteScheduler built from the model's own
scheduler config, with the family's ``sigmas`` and ``mu`` (dynamic shift) passed as its
pipeline passes them (engine.backbones.flow.FlowBackbone.schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FINAL = -1  # previous() of the last timestep: the clean end of the run (s = 0)


@dataclass(frozen=True)
class FlowSchedule:
    """The timesteps and sigmas of one ``steps``-step flow-matching run."""

    timesteps: tuple[float, ...]  # descending, as decoding visits them (s * num_train_timesteps)
    sigmas: tuple[float, ...]  # one per timestep: the flow time s there
    train_timesteps: int  # the scheduler's num_train_timesteps (timestep = s * this)

    @classmethod
    def from_config(cls, scheduler_config: dict, steps: int, *, sigmas=None,
                    mu: float | None = None) -> "FlowSchedule":
        """As diffusers' pipelines set the scheduler: ``set_timesteps(steps, sigmas=, mu=)``."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=list(sigmas), mu=mu)
        else:
            scheduler.set_timesteps(steps, mu=mu)
        return cls(timesteps=tuple(float(t) for t in scheduler.timesteps),
                   sigmas=tuple(float(s) for s in scheduler.sigmas[:-1]),
                   train_timesteps=int(scheduler.config.num_train_timesteps))

    def level(self, t: float) -> float:
        """The sigma at timestep ``t``; past the end (negative) 0, the clean image."""
        if t < 0:
            return 0.0
        try:
            return self.sigmas[self.timesteps.index(t)]
        except ValueError:  # a timestep off the schedule (the mask estimate's t at 0.5)
            return float(t) / self.train_timesteps

    def previous(self, t: float) -> float:
        """The timestep one step closer to the clean image (FINAL after the last)."""
        index = self.timesteps.index(t) + 1
        return self.timesteps[index] if index < len(self.timesteps) else FINAL

    def tail(self, count: int) -> tuple[float, ...]:
        """The last ``count`` timesteps: where a run of strength count/steps starts decoding."""
        return self.timesteps[len(self.timesteps) - count:]

    def timestep_at(self, ratio: float) -> float:
        """The model timestep at flow time ``ratio`` in [0, 1]."""
        return float(ratio) * self.train_timesteps

    def noised(self, z0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """``z0`` on the path at ``t``: (1 - s) z0 + s noise."""
        s = self.level(t)
        return (1.0 - s) * z0 + s * noise

    def predict(self, ctx, latents: torch.Tensor, t: float, cond, **kwargs) -> torch.Tensor:
        """The velocity at ``latents`` read as being at ``t``: what ``step`` takes."""
        return ctx.predict_velocity(latents, t, cond, **kwargs)

    def step(self, x: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float,
             eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` moved from ``t`` to ``t_next`` along ``velocity`` (see the module docstring)."""
        return flow_step(x, velocity, self.level(t), self.level(t_next), eta, noise)


def flow_step(x: torch.Tensor, velocity: torch.Tensor, s: float, s_next: float,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Move ``x`` from flow time ``s`` to ``s_next`` along ``velocity``.

    Deterministic: the Euler step (diffusers' FlowMatchEulerDiscreteScheduler.step). With
    ``eta`` > 0 and ``noise`` while decoding: DDIM's stochastic step on the variance-preserving
    process x_s / r(s), r(s) = sqrt((1 - s)^2 + s^2), whose cumulative alpha is ((1 - s) / r)^2;
    x0 and the noise come straight from the velocity (x0 = x - s u, eps = x + (1 - s) u), so
    s = 1 needs no division.
    """
    if not (eta > 0 and noise is not None and s_next < s):
        return x + (s_next - s) * velocity
    r, r_next = ((1 - s) ** 2 + s**2) ** 0.5, ((1 - s_next) ** 2 + s_next**2) ** 0.5
    alpha, alpha_next = ((1 - s) / r) ** 2, ((1 - s_next) / r_next) ** 2
    sigma = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)) ** 0.5
    x0, eps = x - s * velocity, x + (1 - s) * velocity
    direction = max(0.0, 1.0 - alpha_next - sigma**2) ** 0.5
    return (1 - s_next) * x0 + r_next * (direction * eps + sigma * noise)
