"""The flow-matching seam: FlowSchedule against diffusers' FlowMatchEulerDiscreteScheduler, the
Euler and stochastic steps, and DiffEdit's, SDEdit's and Blended's own loops (inversion, masked
decoding, the mask contrast, latent blending) on an analytic velocity field whose exact flow is
known: Gaussian data x0 ~ N(m, sd^2) per element, where the text moves m inside a region."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.backbones.base import Conditioning
from engine.backbones.flow import FlowBackbone
from engine.flow import FINAL, FlowSchedule, flow_step
from engine.inversion import ddim_invert, ddim_step
from engine.methods import blended, diffedit
from engine.runtime import RunContext

# A FLUX-like scheduler config: dynamic shifting from the image sequence length.
FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
               "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
               "base_image_seq_len": 256, "max_image_seq_len": 4096}
SD = 0.5  # the data's standard deviation
SHAPE = (1, 4, 6, 8)


def _region() -> torch.Tensor:
    region = torch.zeros(SHAPE[-2:])
    region[1:4, 2:6] = 1.0
    return region


class GaussianFlow(FlowBackbone):
    """The exact velocity E[eps - x0 | x_s] for x0 ~ N(m, SD^2), m = 0.2 + text * region, where
    ``text`` is the conditioning's first feature (the "prompt")."""

    family, title = "oracle", "oracle"
    latent_factor, native_area, size_multiple, max_batch = 8, 64 * 64, 8, 8

    def __init__(self):
        self.model = SimpleNamespace(device=torch.device("cpu"), scheduler_config=FLOW_CONFIG)

    def predict(self, latents, timestep, cond, **kwargs):
        s = float(timestep) / 1000
        m = 0.2 + cond.embeds[:, 0, 0].view(-1, 1, 1, 1) * _region()
        variance = (1 - s) ** 2 * SD**2 + s**2
        return (s - (1 - s) * SD**2) * (latents - (1 - s) * m) / variance - m


def _text(value: float) -> Conditioning:
    return Conditioning(torch.full((1, 3, 2), value))


def _ctx():
    backbone = GaussianFlow()
    return RunContext(backbone.model, backbone=backbone), backbone


def _exact(z0: torch.Tensor, s: float, value: float) -> torch.Tensor:
    """The exact flow of ``z0`` (at s = 0) to flow time ``s`` under the text ``value``."""
    m = 0.2 + value * _region()
    return (1 - s) * m + ((1 - s) ** 2 + (s / SD) ** 2) ** 0.5 * (z0 - m)


@pytest.mark.parametrize("steps,tokens", [(4, 1024), (28, 4096), (50, 256)])
def test_the_schedule_is_diffusers_flow_scheduler_with_the_pipelines_shift(steps, tokens):
    from diffusers import FlowMatchEulerDiscreteScheduler

    backbone = GaussianFlow()
    schedule = backbone.schedule(steps, (tokens // 32, 32))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_CONFIG)
    scheduler.set_timesteps(steps, mu=backbone.mu(tokens, steps))
    assert schedule.timesteps == tuple(float(t) for t in scheduler.timesteps)
    assert schedule.sigmas == tuple(float(s) for s in scheduler.sigmas[:-1])
    assert schedule.level(schedule.previous(schedule.timesteps[-1])) == 0.0
    assert schedule.tail(2) == schedule.timesteps[-2:] and schedule.timestep_at(0.5) == 500.0
    # A larger picture shifts the schedule towards noise.
    assert backbone.schedule(steps, (64, 64)).sigmas[1] > backbone.schedule(steps, (16, 16)).sigmas[1]


def test_the_euler_step_equals_the_schedulers_step_and_noised_its_scale_noise():
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = FlowSchedule.from_config(FLOW_CONFIG, 6, mu=0.8)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_CONFIG)
    scheduler.set_timesteps(6, mu=0.8)
    generator = torch.Generator().manual_seed(0)
    x, z0 = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    ours = theirs = x
    for t in schedule.timesteps:
        velocity = torch.randn(SHAPE, generator=generator)
        ours = schedule.step(ours, velocity, t, schedule.previous(t))
        theirs = scheduler.step(velocity, torch.tensor(t), theirs, return_dict=False)[0]
        assert torch.allclose(ours, theirs, atol=1e-6)
    t = schedule.timesteps[2]
    assert torch.allclose(schedule.noised(z0, x, t),
                          scheduler.scale_noise(z0, torch.tensor([t]), x), atol=1e-6)


def test_the_stochastic_step_is_ddim_on_the_equivalent_variance_preserving_process():
    generator = torch.Generator().manual_seed(1)
    x0, eps, noise = (torch.randn(SHAPE, generator=generator) for _ in range(3))
    s, s_next, eta = 0.7, 0.4, 0.6
    x = (1 - s) * x0 + s * eps
    r, r_next = ((1 - s) ** 2 + s**2) ** 0.5, ((1 - s_next) ** 2 + s_next**2) ** 0.5
    alpha, alpha_next = ((1 - s) / r) ** 2, ((1 - s_next) / r_next) ** 2
    expected = r_next * ddim_step(x / r, eps, alpha, alpha_next, eta, noise)
    ours = flow_step(x, eps - x0, s, s_next, eta, noise)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not torch.allclose(ours, flow_step(x, eps - x0, s, s_next), atol=1e-3)
    # From pure noise (s = 1) the step needs no division: x0 and eps come from the velocity.
    assert torch.isfinite(flow_step(eps, eps - x0, 1.0, 0.5, eta, noise)).all()


def test_inversion_follows_the_exact_flow_and_decoding_brings_the_latent_back():
    """To the solver's tolerance: Euler is first order, so 4x the steps cut both errors ~4x."""
    z0 = 0.2 + SD * torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    text = _text(0.3)
    ends, reconstructions = [], []
    for steps in (10, 40, 160):
        ctx, backbone = _ctx()
        schedule = backbone.schedule(steps)
        trajectory = ddim_invert(ctx, z0, schedule, steps, text)
        assert schedule.sigmas[0] == 1.0  # all the way to pure noise
        ends.append(float((trajectory[-1] - _exact(z0, 1.0, 0.3)).abs().max()))
        everywhere = torch.ones(SHAPE[-2:])
        final = diffedit.masked_decode(ctx, schedule, trajectory, everywhere, text, text, 1.0,
                                       0.0, seed=0)
        reconstructions.append(float((final - z0).abs().max()))
        assert ctx.unet_evals == {"run": 2 * steps}
    for errors in (ends, reconstructions):
        assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors
    assert ends[2] < 0.02 and reconstructions[2] < 0.01


def test_identical_texts_give_a_zero_contrast_and_different_ones_the_region():
    ctx, backbone = _ctx()
    schedule = backbone.schedule(10)
    z0 = 0.2 + SD * torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    same = diffedit.estimate_heatmap(ctx, schedule, z0, _text(0.3), _text(0.3), 4, 0.5, 0, 8)
    assert not same.any()
    heat = diffedit.estimate_heatmap(ctx, schedule, z0, _text(0.3), _text(-0.5), 4, 0.5, 0, 8)
    assert torch.equal(heat > 0.5, _region().bool())
    # The contrast is the velocity contrast times (1 - s): the noise each velocity implies.
    x = schedule.noised(z0, torch.randn(SHAPE), 500.0)
    eps = [ctx.predict_noise(x, 500.0, _text(v), schedule.level(500.0)) for v in (0.3, -0.5)]
    velocity = [ctx.predict_velocity(x, 500.0, _text(v)) for v in (0.3, -0.5)]
    assert torch.allclose(eps[0] - eps[1], 0.5 * (velocity[0] - velocity[1]), atol=1e-6)


def test_masked_decoding_keeps_the_encoding_outside_the_mask_at_every_level():
    ctx, backbone = _ctx()
    schedule = backbone.schedule(8)
    z0 = 0.2 + SD * torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    trajectory = ddim_invert(ctx, z0, schedule, 6, _text(0.0))
    final = diffedit.masked_decode(ctx, schedule, trajectory, _region(), _text(0.0), _text(0.8),
                                   1.0, 0.0, seed=0)
    outside = ~_region().bool().expand(SHAPE)
    assert torch.equal(final[outside], z0[outside])
    # Inside, the edit moved the latent towards the target text's mean (by 0.8 there).
    inside = ~outside
    assert float((final - z0)[inside].mean()) > 0.4


def test_blended_sampling_from_pure_noise_lands_on_the_photo_outside_and_the_text_inside():
    ctx, backbone = _ctx()
    schedule = backbone.schedule(100)
    generator = torch.Generator().manual_seed(5)
    z0 = 0.2 + SD * torch.randn(SHAPE, generator=generator)
    noise = torch.randn(SHAPE, generator=generator)
    final = blended.blended_denoise(ctx, schedule, schedule.timesteps, noise.clone(), z0, noise,
                                    _region(), _text(0.0), _text(1.0), 1.0)
    outside = ~_region().bool().expand(SHAPE)
    assert torch.equal(final[outside], z0[outside])
    # Inside: the exact flow of the noise back to s = 0 under the text (m = 1.2 there).
    exact_sample = 1.2 + SD * noise
    assert torch.allclose(final[~outside], exact_sample[~outside], atol=0.05)
    assert schedule.previous(schedule.timesteps[-1]) == FINAL


def test_the_fitted_preview_map_recovers_colours_through_a_linear_latent_space():
    """A VAE stand-in whose latent is a fixed linear function of each 8 px cell's colour (with
    more channels than colours, as FLUX.2's 128): the fitted map reads the colours back."""
    import numpy as np

    from engine.preview import fit_rgb_map, mapped_preview

    mixing = torch.randn(3, 12, generator=torch.Generator().manual_seed(6))

    def encode(pixels):
        cells = torch.from_numpy(pixels[::8, ::8].astype(np.float32) / 127.5 - 1.0)
        return (torch.einsum("hwr,rc->chw", cells, mixing) + 0.3)[None]

    rgb_map = fit_rgb_map(encode, 8)
    colours = np.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    preview = mapped_preview(encode(colours.repeat(8, 0).repeat(8, 1)), rgb_map, (6, 4))
    assert preview.shape == (4, 6, 3)
    assert np.abs(preview.astype(int) - colours[:4, :6].astype(int)).max() <= 2


def test_flowedit_carries_gaussian_data_exactly_by_the_texts_shift_inside_the_mask():
    """On the analytic field the noise cancels from FlowEdit's velocity difference, and at full
    strength the edit is the exact transport between the two texts' data: x + (m_tar - m_src)."""
    from engine.methods import flowedit

    ctx, backbone = _ctx()
    schedule = backbone.schedule(10)
    z0 = 0.2 + SD * torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    inside = _region().bool().expand(SHAPE)
    out = flowedit.edit(ctx, schedule, schedule.timesteps, z0, _region(), None, _text(0.0),
                        _text(0.8), (1.0, 1.0), 2, 0, seed=0)
    assert torch.allclose((out - z0)[inside], torch.full((int(inside.sum()),), 0.8), atol=1e-5)
    assert torch.equal(out[~inside], z0[~inside])
    assert ctx.unet_evals == {"run": 10 * 2 * 2}  # per step: 2 draws x (source, target)
    same = flowedit.edit(ctx, schedule, schedule.timesteps, z0, None, None, _text(0.3),
                         _text(0.3), (1.0, 1.0), 1, 0, seed=0)
    assert torch.equal(same, z0)  # identical texts: a zero difference at every step
