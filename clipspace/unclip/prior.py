"""The unCLIP prior: a caption's CLIP text embedding z_t in, a CLIP image embedding z_i out.

unCLIP is two stages (Ramesh et al. 2022, sec. 2.1): the prior samples z_i given z_t, the decoder
draws z_i. A text embedding is not an image embedding (the modality gap: the two towers' embeddings
sit in different cones of the sphere), so feeding z_t to the decoder as if it were z_i works less
well than the prior's z_i; `clipspace.train.measure_prior` measures by how much.

`DiffusionPrior` wraps diffusers' `PriorTransformer` (the prior of Karlo and Kandinsky), as DALL-E 2's
diffusion prior is built: a causal-free transformer over four tokens [z_t, timestep, noisy z_i,
a learned final token] whose last output is the prediction of the clean z_i (x0, prediction_type
"sample"), trained with an MSE on it. z_i is normalised per dimension by the data's mean and std
(`clip_mean` / `clip_std`, parameters of the transformer, so they are saved with the weights) and
`post_process_latents` undoes it. Only the pooled z_t conditions it; the text encoder's token states
are not used (the tiny CLIP's pooled embedding already carries what the world's captions say).

Classifier-free guidance: z_t was zeroed for 10% of training batches, so z_t = 0 is the
unconditional prior (null = zeros, as the decoder's null z_i; no learned null token).
Sampling: diffusers' `DDIMScheduler` on the config's schedule ("trailing" spacing, so the first step
starts from pure noise), eta 0 by default: deterministic given the seed. `best_of=2` draws two
candidates per sample and keeps the one with the higher cosine to z_t, as DALLE2-pytorch does.

The architecture is data, like the decoder's: `model_configs/prior-*.json` holds the transformer kwargs,
the schedule and the CLIP it pairs with; `build_prior` is the one factory; `load_prior(clip=...)`
checks the pairing; `prior_for(clip)` is (prior, "") or (None, one line saying why there is none).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, PriorTransformer

from clipspace.errors import InvalidArgumentError, PriorMismatchError, PriorNotFoundError
from clipspace.factory import WEIGHTS_DIR, read_model_config, write_model_dir
from clipspace.unclip.decoder import DEFAULT_CLIP, classifier_free_guidance, same_clip_name

DEFAULT_PRIOR = "prior-tiny"
DEFAULT_PRIOR_WEIGHTS = WEIGHTS_DIR / DEFAULT_PRIOR
CONFIG_FILE = "prior_config.json"
WEIGHTS_FILE = "prior.safetensors"


def get_prior_config(name_or_path: str | os.PathLike | dict = DEFAULT_PRIOR) -> dict:
    """A prior config: a dict, a JSON file, or the name of one in `clipspace/model_configs/`."""
    return read_model_config(name_or_path, "prior")


def transformer_kwargs(config: dict) -> dict:
    """PriorTransformer kwargs: the config's `transformer` block with the embedding size filled in
    from `clip_embed_dim` (one source of truth)."""
    kw = dict(config["transformer"])
    kw["embedding_dim"] = config["clip_embed_dim"]
    return kw


def check_texts(texts) -> list[str] | torch.Tensor:
    """Captions as a list of non-blank strings, or text embeddings as a finite float (N, D) tensor."""
    if isinstance(texts, (torch.Tensor, np.ndarray)):
        z = torch.as_tensor(texts).float()
        z = z[None] if z.ndim == 1 else z
        if z.ndim != 2 or len(z) == 0:
            raise InvalidArgumentError(f"texts as embeddings must be a non-empty (N, D) array, got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise InvalidArgumentError("texts (text embeddings) has NaN or inf values: it must be finite")
        return z
    texts = [texts] if isinstance(texts, str) else list(texts) if texts is not None else []
    if not texts:
        raise InvalidArgumentError("texts is empty: pass at least one caption, e.g. 'a red circle'")
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InvalidArgumentError(f"texts holds {len(bad)} empty or non-string caption(s) ({bad[0]!r}): "
                                   "each must be a caption, e.g. 'a red circle'")
    return texts


def _count(name: str, v, least: int = 1) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < least:
        raise InvalidArgumentError(f"{name} must be an int >= {least}, got {v!r}")
    return int(v)


def check_guidance(v, name: str = "guidance") -> float:
    """A guidance scale: a finite number >= 0 (0 unconditional, 1 the conditional model, > 1 guided)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = float("nan")
    if not np.isfinite(f) or f < 0:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0 (1: the conditional model, "
                                   f"larger: guided), got {v!r}")
    return f


class DiffusionPrior:
    """A diffusion prior from unit-norm CLIP text embeddings to unit-norm CLIP image embeddings."""

    def __init__(self, transformer: PriorTransformer, config: dict):
        self.transformer = transformer
        self.config = config
        self.scheduler = DDIMScheduler(**config["scheduler"])
        self.embed_dim = int(config["clip_embed_dim"])
        self.clip_name = str(config["clip_model"])
        self.guidance = float(config.get("guidance", 1.0))
        self.clip = None  # the CLIP `load_prior(clip=...)` checked: sample() embeds captions with it
        self.traced = True  # sample through a TorchScript trace of the transformer (see `_forward`)
        self._trace = None

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.transformer.parameters())
        return (f"DiffusionPrior({n / 1e6:.2f}M params, clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"layers={self.transformer.config.num_layers}, guidance={self.guidance})")

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def to(self, device=None, dtype=None) -> "DiffusionPrior":
        self.transformer.to(device=device, dtype=dtype)
        return self

    def check_clip(self, clip) -> None:
        if int(clip.embed_dim) != self.embed_dim or not same_clip_name(clip.name, self.clip_name):
            raise PriorMismatchError(
                f"this prior was trained on {self.clip_name!r} embeddings ({self.embed_dim}-d), but the CLIP "
                f"given is {clip.name!r} ({clip.embed_dim}-d); load the matching CLIP "
                f"(load_clip({self.clip_name!r})) or a prior trained on this one")

    # --- the normalisation of z_i ------------------------------------------------------------------
    def normalise(self, z_i: torch.Tensor) -> torch.Tensor:
        """z_i in the space the diffusion runs in: (z_i - clip_mean) / clip_std."""
        t = self.transformer
        return (z_i.to(t.clip_mean) - t.clip_mean) / t.clip_std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer.post_process_latents(x)

    def sampling_scheduler(self, steps: int) -> DDIMScheduler:
        """A DDIM scheduler on the config's schedule set to `steps`, made once per step count (building
        one is a fifth of a 25-step sample's time; DDIM's step keeps no state between calls)."""
        cache = self.__dict__.setdefault("_schedulers", {})
        if steps not in cache:
            sched = DDIMScheduler.from_config(self.scheduler.config)
            sched.set_timesteps(steps)
            cache[steps] = sched
        return cache[steps]

    # --- the model ---------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """The transformer's prediction. For a 4-token model, diffusers' Python around each op costs more
        than the ops (18 ms of a 25-step sample's ~20 are per-call overhead on one core), so inference goes
        through a TorchScript trace of the same module, made once per weights object, device and dtype
        (the trace holds the module's own parameters: weights changed in place are seen). The trace is
        checked against the eager forward when made; eager if tracing fails or `traced` is False."""
        net = self.transformer
        if not self.traced or net.training:
            return net(x, t, proj_embedding=z_t).predicted_image_embedding
        key = (id(net), x.device, x.dtype)
        if self._trace is None or self._trace[0] != key:
            self._trace = (key, _trace(net, x, t, z_t))
        fn = self._trace[1]
        return fn(x, t, z_t) if fn is not None else net(x, t, proj_embedding=z_t).predicted_image_embedding

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z_t: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """The predicted clean normalised z_i for noisy x at timestep t given text embeddings z_t,
        with classifier-free guidance against z_t = 0 (the unconditional prior)."""
        z_t, t = z_t.to(x), torch.as_tensor(t, device=x.device)
        if guidance == 1.0:  # the conditional model alone: half the work
            return self._forward(x, t, z_t)
        both = self._forward(torch.cat([x, x]), t, torch.cat([torch.zeros_like(z_t), z_t]))
        uncond, cond = both.chunk(2)
        return classifier_free_guidance(uncond, cond, guidance)

    def embed_texts(self, texts, clip=None) -> torch.Tensor:
        """Unit-norm text embeddings (N, D) of captions (through `clip`), or the embeddings given."""
        texts = check_texts(texts)
        if isinstance(texts, torch.Tensor):
            if texts.shape[1] != self.embed_dim:
                raise InvalidArgumentError(f"texts embeddings have shape {tuple(texts.shape)}, but the prior takes "
                                           f"{self.embed_dim}-d text embeddings (N, {self.embed_dim})")
            return texts
        clip = clip if clip is not None else self.clip
        if clip is None:
            raise InvalidArgumentError("clip is needed to embed captions: pass sample(texts, clip=clip), load the "
                                       "prior with load_prior(clip=clip), or pass text embeddings")
        self.check_clip(clip)
        from clipspace.unclip.latents import embed_texts

        return embed_texts(clip, texts)

    @torch.no_grad()
    def sample(self, texts, n: int = 1, guidance: float | None = None, steps: int = 25, seed: int = 0,
               clip=None, best_of: int = 1, eta: float = 0.0) -> torch.Tensor:
        """n unit-norm image embeddings per caption, (len(texts) * n, D), caption by caption.

        texts: captions (embedded with `clip`, or the CLIP given to load_prior) or text embeddings
        (N, D). guidance: classifier-free guidance scale (None: the config's). best_of: draw that
        many candidates per sample and keep the one closest (cosine) to z_t (DALLE2-pytorch's
        "draw two, keep the better"). Deterministic per seed at eta 0; eta > 0 adds DDIM noise.
        """
        from clipspace.unclip.latents import check_args

        n, best_of = _count("n", n), _count("best_of", best_of)
        steps, eta = check_args(steps=steps, eta=eta)
        guidance = self.guidance if guidance is None else check_guidance(guidance)
        z_t = self.embed_texts(texts, clip)
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((len(z_t) * n * best_of, self.embed_dim), generator=g)  # CPU: same on every device
        cond = z_t.repeat_interleave(n * best_of, dim=0)
        z = sample_loop(self, cond, noise, steps=steps, guidance=guidance, eta=eta, generator=g)
        z = torch.nn.functional.normalize(z.float().cpu(), dim=-1)
        if best_of > 1:
            z = z.reshape(len(z_t) * n, best_of, -1)
            score = (z * cond.reshape(len(z_t) * n, best_of, -1).float()).sum(-1)
            z = z[torch.arange(len(z)), score.argmax(1)]
        return z


class _Call(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, z_t):
        return self.net(x, t, proj_embedding=z_t, return_dict=False)[0]


@torch.no_grad()
def _trace(net: PriorTransformer, x: torch.Tensor, t: torch.Tensor, z_t: torch.Tensor):
    """A TorchScript trace of net(x, t, proj_embedding=z_t), or None if tracing fails or disagrees."""
    import warnings

    try:
        with warnings.catch_warnings():  # local: trace's deprecation and constant-branch notes are expected
            warnings.simplefilter("ignore")
            fn = torch.jit.trace(_Call(net), (x, t, z_t), check_trace=False)
        eager = net(x, t, proj_embedding=z_t).predicted_image_embedding
        return fn if torch.allclose(fn(x, t, z_t), eager, atol=1e-5, rtol=1e-4) else None
    except Exception:  # noqa: BLE001 (any failure to trace: the eager module still works)
        return None


@torch.no_grad()
def sample_loop(prior: DiffusionPrior, z_t: torch.Tensor, noise: torch.Tensor, steps: int = 25,
                guidance: float = 1.0, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM from noise (normalised space) to z_i (not yet unit-norm): the ten-line loop under `sample`."""
    sched = prior.sampling_scheduler(steps)
    dev, dtype = prior.device, prior.transformer.dtype
    x = noise.to(dev, dtype) * sched.init_noise_sigma
    z_t = z_t.to(dev, dtype)
    for t in sched.timesteps:
        x = sched.step(prior.predict(x, t, z_t, guidance), t, x, eta=eta, generator=generator).prev_sample
    return prior.denormalise(x)


def build_prior(config: str | os.PathLike | dict = DEFAULT_PRIOR, seed: int | None = None) -> DiffusionPrior:
    """A prior with freshly initialised weights (seeded if `seed` is given); clip_mean 0, clip_std 1."""
    config = get_prior_config(config)
    if seed is not None:
        torch.manual_seed(seed)
    transformer = PriorTransformer(**transformer_kwargs(config))
    with torch.no_grad():  # diffusers initialises std to 0: identity statistics until the data's are set
        transformer.clip_std.fill_(1.0)
    transformer.clip_mean.requires_grad_(False)
    transformer.clip_std.requires_grad_(False)
    return DiffusionPrior(transformer.eval(), config)


def save_prior(prior: DiffusionPrior, out: str | os.PathLike, fp16: bool = False,
               transformer: torch.nn.Module | None = None, extra: dict | None = None) -> Path:
    """Write `prior_config.json` + `prior.safetensors` into `out`. `transformer` overrides the
    weights written (the trainer passes its EMA copy); `extra` adds keys to the JSON. fp16 keeps
    clip_mean / clip_std in fp32 (they rescale every output)."""
    return write_model_dir(out, (transformer or prior.transformer).state_dict(), {**prior.config, **(extra or {})},
                           WEIGHTS_FILE, CONFIG_FILE, fp16=fp16, keep_fp32=("clip_mean", "clip_std"))


def load_prior(path: str | os.PathLike | None = None, clip=None,
               device: str | torch.device | None = None) -> DiffusionPrior:
    """Load a trained prior directory (`prior_config.json` + `prior.safetensors`).

    `path=None` is the shipped offline prior (`clipspace/weights/prior-tiny/`). Given `clip`,
    checks that the prior was trained on that CLIP's embeddings (PriorMismatchError if not) and
    keeps it for `sample` to embed captions with.
    """
    from safetensors.torch import load_file

    default = path is None
    path = Path(DEFAULT_PRIOR_WEIGHTS if default else path)
    if not (path / WEIGHTS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        if default:
            raise PriorNotFoundError(
                f"the offline prior is not trained yet: no {WEIGHTS_FILE} in {path}. Train it with "
                f"`python -m clipspace.train prior --clip default --out runs/prior` and copy that directory "
                f"to {path}, or pass load_prior(path=...)")
        raise PriorNotFoundError(f"{path} is not a prior directory: it needs {CONFIG_FILE} and {WEIGHTS_FILE} "
                                 f"(written by `python -m clipspace.train prior --out DIR`)")
    config = json.loads((path / CONFIG_FILE).read_text())
    prior = build_prior(config)
    prior.transformer.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=True)  # fp16 files into fp32
    if device is not None:
        prior.to(device=torch.device(device))
    if clip is not None:
        prior.check_clip(clip)
        prior.clip = clip
    return prior


def prior_for(clip, device: str | torch.device | None = None) -> tuple[DiffusionPrior | None, str]:
    """The prior that pairs with `clip`, or (None, one line saying why there is none).

    Notebook 07 asks this once, as it asks `decoder_for`, so a CLIP without a prior (a real model in
    the first cell) skips the sections that generate with that line instead of stopping. A stack
    loaded with this very CLIP object (`stacks.load_unclip(...)`) answers with its own prior."""
    from clipspace.unclip import stacks

    if (stack := stacks.loaded_stack(clip)) is not None:
        if stack.prior is not None:
            return stack.prior, ""
        return None, (f"No prior: the {stack.name!r} stack has none (a decoder only); the stacks with a prior "
                      f"are {', '.join(n for n, s in stacks.STACKS.items() if s.prior_repo)}.")
    try:
        return load_prior(clip=clip, device=device), ""
    except PriorMismatchError:
        return None, (f"No prior pairs with {clip.name!r} ({clip.embed_dim}-d): the offline prior maps "
                      f"{DEFAULT_CLIP!r} text embeddings only, so the sections that generate are skipped.")
    except PriorNotFoundError as e:
        return None, f"No prior: {e}"

