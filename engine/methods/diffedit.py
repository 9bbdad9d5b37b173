"""DiffEdit (Couairon et al., 2022): mask from noise contrast, unconditional DDIM encoding,
masked decoding under the target text with the encoded latents kept outside the mask.

On a flow-matching backbone the same code runs on its FlowSchedule (engine.flow): the contrast
is of the noise the velocities imply, eps_Q - eps_R = (1 - s)(u_Q - u_R) at the path point
x_s = (1 - s) z0 + s eps, the encoding is the flow-ODE inversion and decoding the Euler steps.
"""

from __future__ import annotations

import torch

from engine.backbones.base import Conditioning, as_conditioning
from engine.inversion import Schedule


def run(session, ctx, source, target, mask, params, options) -> list:
    """The full edit: auto mask (unless given), unconditional encoding, masked decoding, paste-back."""
    # 1. Check inputs (DiffEdit needs nothing beyond check_inputs' shared checks)
    geometry = session.geometry(params)
    # 2. Find the mask where the two texts disagree (unless one is given)
    heatmap = None
    if mask is None:
        heatmap, mask = session.auto_mask(ctx, geometry, source, target, params)
    # 3. A big photo with a small mask: edit the mask's region at full model detail
    box = session.region_for(mask, params)
    if box is not None:
        left, top, right, bottom = box
        region = session.sub_session(box)
        [result] = run(region, ctx, source, target, mask[top:bottom, left:right], params, options)
        return [session.place(result, box, heatmap)]
    # 4. Encode the photo without text (cached: independent of the texts)
    latent_mask = torch.from_numpy(geometry.mask_to_latent(mask))
    schedule = session.schedule(params.steps, geometry)
    trajectory = session.encode(ctx, geometry, schedule, params)
    # 5. Encode the texts and decode under the target, the encoding kept outside the mask (an
    #    inpainting model also sees the mask and the photo around it)
    with ctx.timed("decode"), session.inpainting(geometry, mask):
        negative = params.negative_prompt or source
        latent = masked_decode(ctx, schedule, trajectory, latent_mask, session.embed(negative),
                               session.embed(target), params.guidance, params.eta, params.seed,
                               geometry.latent_content)
    # 6. Decode the latent and paste it back into the photo through the mask
    return [session.finish(ctx, geometry, latent, mask, params, source, target, "diffedit",
                           options, heatmap)]


def mask_conditions(session, geometry, source: str, target: str) -> tuple:
    """The two conditionings the mask contrasts: the source text's and the target text's."""
    return session.embed(source), session.embed(target)


# A map whose variance across cells is at most this many times what its sampling noise alone
# gives shows no disagreement (maps of pure noise measure 0.8-1.1; the tiny random model's real
# texts 1.5 with 2 samples, 5 with 10).
NOISE_FLOOR = 1.25


@torch.no_grad()
def estimate_heatmap(ctx, schedule: Schedule, z0: torch.Tensor, source: Conditioning,
                     target: Conditioning, samples: int, noise_ratio: float, seed: int,
                     batch: int, content: tuple[int, int] | None = None) -> torch.Tensor:
    """Where the two texts disagree about the noise: an (h, w) latent-size map in [0, 1].

    ``samples`` noisings of ``z0`` at ``noise_ratio`` are each predicted under the source and
    the target text (2 * samples evaluations, no unconditional duplicates), in UNet calls of at
    most ``batch`` evaluations. Per sample the absolute difference is averaged over channels,
    the samples are averaged, values beyond mean + 3 std are clipped (extreme predictions), and
    the map is rescaled to [0, 1]. Only the ``content`` = (columns, rows) cells at the top left
    that hold the photo enter these statistics; the padding beyond them is 0.

    All zeros when the predictions under the two inputs do not differ anywhere: when the map
    varies across cells no more than NOISE_FLOOR times what the sampling noise alone explains
    (its variance over the cells against the mean squared standard error of a cell's average
    over the samples). Rescaled, such a map would select a large part of the photo at random.
    One sample gives no noise estimate; then only identical predictions count as no
    disagreement.
    """
    source, target = as_conditioning(source), as_conditioning(target)
    t = schedule.timestep_at(noise_ratio)
    level = schedule.level(t)
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((samples, *z0.shape[1:]), generator=generator).to(z0.device)
    noisy = schedule.noised(z0, noise, t)
    pairs_per_call = max(1, batch // 2)
    total, squares = 0.0, 0.0
    for start in range(0, samples, pairs_per_call):
        chunk = noisy[start:start + pairs_per_call]
        n = chunk.shape[0]
        texts = Conditioning.cat([source.expand(n), target.expand(n)])
        eps = ctx.predict_noise(torch.cat([chunk, chunk]), t, texts, level)
        eps_source, eps_target = eps[:n], eps[n:]
        difference = (eps_target - eps_source).abs().mean(dim=1)
        total = total + difference.sum(dim=0)
        squares = squares + difference.double().square().sum(dim=0)
        ctx.step(start + n, samples)  # in samples, as the step plan counts them, batched or not
    columns, rows = content or (z0.shape[-1], z0.shape[-2])
    heat = torch.zeros_like(total)
    mean = (total / samples)[:rows, :columns]
    if _within_noise(mean, squares[:rows, :columns], samples):
        return heat
    ceiling = mean.mean() + 3 * mean.std()
    mean = mean.clamp(max=float(ceiling))
    low, high = mean.min(), mean.max()
    heat[:rows, :columns] = (mean - low) / (high - low)
    return heat


def _within_noise(mean: torch.Tensor, squares: torch.Tensor, samples: int) -> bool:
    """Whether a map of ``samples``-sample averages (with the samples' summed squares) is flat."""
    spread = float(mean.double().var(correction=0)) if mean.numel() > 1 else 0.0
    if spread <= 1e-24:
        return True
    if samples < 2:
        return False
    within = (squares - samples * mean.double().square()).clamp(min=0) / (samples - 1)
    noise = float(within.mean()) / samples  # mean squared standard error of a cell's average
    return spread <= NOISE_FLOOR * noise


@torch.no_grad()
def masked_decode(ctx, schedule: Schedule, trajectory: list[torch.Tensor], latent_mask: torch.Tensor,
                  uncond: Conditioning, cond: Conditioning, guidance: float, eta: float, seed: int,
                  preview_content: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode from the encoded latent under ``cond`` with classifier-free guidance.

    After every step the latent outside ``latent_mask`` (1 = edit; soft values blend) is replaced
    by the encoded latent at the level the step arrived at, so the background follows the
    photo's own trajectory. Returns the final latent.
    """
    count = len(trajectory) - 1
    timesteps = schedule.tail(count)
    mask = latent_mask.to(trajectory[0].device, torch.float32)[None, None]
    generator = torch.Generator("cpu").manual_seed(seed)
    use_cfg = guidance != 1.0
    uncond, cond = as_conditioning(uncond), as_conditioning(cond)
    texts = Conditioning.cat([uncond, cond]) if use_cfg else cond
    x = trajectory[-1]
    for index, t in enumerate(timesteps):
        if use_cfg:
            prediction = ctx.guide(*schedule.predict(ctx, torch.cat([x, x]), t, texts).chunk(2),
                                   guidance)
        else:
            prediction = schedule.predict(ctx, x, t, texts)
        noise = None
        if eta > 0:
            noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = schedule.step(x, prediction, t, schedule.previous(t), eta, noise)
        # trajectory[count - index - 1] is the encoded latent at the level x just reached.
        x = mask * x + (1 - mask) * trajectory[count - index - 1]
        ctx.step_with_preview(index + 1, count, x, preview_content)
    return x
