"""Zero-terminal-SNR v-prediction schedules (alpha 0 at the last training timestep): every step
stays finite and follows diffusers' DDIMScheduler."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.inversion import Schedule, ddim_step
from engine.params import EditParams
from engine.runtime import RunContext
from engine.tiny_model import SD_SCHEDULER
from final_latents import FinalLatents

ZERO_SNR = dict(SD_SCHEDULER, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                timestep_spacing="trailing")


def test_decoding_from_the_terminal_step_is_finite_and_equals_diffusers_ddim():
    from diffusers import DDIMScheduler

    reference = DDIMScheduler(**ZERO_SNR)
    reference.set_timesteps(10)
    alphas = reference.alphas_cumprod.double()
    assert reference.timesteps[0] == 999 and alphas[999] == 0.0
    photo = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    class ExactV(torch.nn.Module):
        """The ideal velocity when the data is the one latent ``photo``."""

        def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
            a = float(alphas[int(t)])
            eps = (x - a**0.5 * photo) / (1 - a) ** 0.5
            return (a**0.5 * eps - (1 - a) ** 0.5 * photo,)

    model = type("Model", (), {"unet": ExactV(), "device": torch.device("cpu"),
                               "dtype": torch.float32, "prediction_type": "v_prediction"})()
    ctx, schedule = RunContext(model), Schedule.from_config(ZERO_SNR, 10)
    ours = theirs = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.zeros(1, 77, 8)
    for t in schedule.timesteps:
        alpha, level = schedule.alpha(t), schedule.alpha(schedule.previous(t))
        ours = ddim_step(ours, ctx.predict_noise(ours, t, text, alpha), alpha, level)
        theirs = reference.step(model.unet(theirs, t)[0], t, theirs).prev_sample
        assert torch.isfinite(ours).all(), t
        # float32 noise at alpha 2**-24 keeps the velocity to about 1e-3 on the first step
        torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["sdedit", "p2p", "pnp"])
def test_full_strength_runs_on_a_zero_snr_v_model_stay_finite(tiny_model, method):
    model = dataclasses.replace(tiny_model, scheduler_config=ZERO_SNR,
                                prediction_type="v_prediction")
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    session = FinalLatents(model, photo)
    session.run(method, "a cat", "a dog", None, EditParams(steps=4, strength=1.0))
    assert torch.isfinite(session.finals[-1]).all()
