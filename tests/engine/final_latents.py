"""FinalLatents: an EditSession that keeps the final latent of every run, for parity tests that
compare latents with diffusers' pipelines before the VAE."""

from engine.session import EditSession


class FinalLatents(EditSession):
    """An EditSession that also keeps the final latent of every run (before the VAE)."""

    finals: list

    def finish(self, ctx, geometry, latent, *args, **kwargs):
        self.__dict__.setdefault("finals", []).append(latent.clone())
        return super().finish(ctx, geometry, latent, *args, **kwargs)
