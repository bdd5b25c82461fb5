"""Kandinsky 2.2 as a `Decoder` and a prior: the only maintained full unCLIP stack in diffusers.

For users with a GPU and the weights: `kandinsky-community/kandinsky-2-2-decoder` and
`kandinsky-community/kandinsky-2-2-prior` pair with OpenCLIP ViT-bigG/14
(1280-d: `load_clip("ViT-bigG-14", pretrained="laion2b_s39b_b160k")`).

    clip = load_clip("ViT-bigG-14", pretrained="laion2b_s39b_b160k", device="cuda")
    prior = KandinskyPrior.from_pretrained("kandinsky-community/kandinsky-2-2-prior", device="cuda")
    dec = KandinskyDecoder.from_pretrained("kandinsky-community/kandinsky-2-2-decoder", device="cuda",
                                           clip=clip, embedding_norm=prior.embedding_norm)
    lat = unclip.invert(dec, clip, images)          # z_i from your CLIP, x_T in MoVQ latent space

The decoder (`KandinskyV22Pipeline`'s UNet and MoVQ), all inside `KandinskyDecoder`:
- diffusion runs on MoVQ latents: `encode_pixels` is the MoVQ encoder's output before quantisation,
  unscaled (as Kandinsky's trainer uses `movq.encode(images).latents`); `decode_pixels` is
  `movq.decode(x, force_not_quantize=True)`, as the pipeline decodes;
- z enters twice, no text at all: added to the time embedding (`addition_embed_type="image"`) and
  projected into context tokens (`encoder_hid_dim_type="image_proj"`); both are a Linear then a
  LayerNorm, so the scale of z acts only through the two Linear biases;
- the UNet's 8 output channels are epsilon plus a learned variance: `predict` keeps the first 4
  (the pipeline does the same for any scheduler without learned variance, DDIM included);
- the unconditional input of guidance is not zeros but the CLIP embedding of an all-zero pixel
  tensor, as `KandinskyV22PriorPipeline.get_zero_embed` makes it with the prior's image encoder
  (zeros *after* the processor's normalisation: the mean colour, not black). Here it comes from
  the clipspace CLIP given (`clip=`: `zero_image_embedding(clip)`, the same weights as the prior's
  image encoder for ViT-bigG), or is passed as `zero_embed=`;
- scale: Kandinsky was trained on raw (unnormalised) CLIP image embeddings, clipspace passes unit
  ones. z is multiplied by `embedding_norm`: best, the prior's root-mean-square embedding norm
  sqrt(|clip_mean|^2 + |clip_std|^2) (`KandinskyPrior.embedding_norm`, the statistics the prior
  denormalises its samples with); without one, the norm of the zero-image embedding of the CLIP
  given. Shortcut: every image gets one typical norm, not its own;
- sampling and inversion use a `DDIMScheduler` on the decoder's own schedule (DDPM linear
  0.00085-0.012, epsilon, steps_offset 1) with leading spacing and no sample clipping, which DDIM
  inversion needs.

The prior (`KandinskyV22PriorPipeline` without its image encoder), `KandinskyPrior`: a
`PriorTransformer` over [the caption's token states, its pooled embedding, the timestep, the noisy
z_i, a learned token], sampled exactly as the pipeline samples (`UnCLIPScheduler`, x0 prediction,
ancestral with fixed_small_log variance, guidance against the empty caption). The caption is read
by the prior's own text encoder (the HF copy of the same CLIP's text tower): the transformer needs
its token states, which a pooled clipspace embedding does not have. `PipelinePrior` is that
sampler, shared with Karlo's prior (`unclip/karlo.py`), whose pipeline samples the same way.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from diffusers import DDIMScheduler, PriorTransformer, UnCLIPScheduler

from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, InvalidArgumentError, PriorMismatchError
from clipspace.unclip.decoder import UNetDecoder, classifier_free_guidance
from clipspace.unclip.stable_unclip import _arch_key

HUB_MODELS = {  # hub id -> the open_clip architecture of the CLIP it was trained on
    "kandinsky-community/kandinsky-2-2-decoder": "ViT-bigG-14",
}
PRIOR_HUB_MODELS = {
    "kandinsky-community/kandinsky-2-2-prior": "ViT-bigG-14",
}
CLIP_PRETRAINED = {"ViT-bigG-14": "laion2b_s39b_b160k"}  # the open_clip tag of those weights (for messages)


# ---------------------------------------------------------------------------------------------
# Shared by the Kandinsky and Karlo adapters: loading parts of a diffusers folder, the pairing check
# ---------------------------------------------------------------------------------------------
def _is_local(name: str) -> bool:
    """A hub id is exactly "org/name"; anything else (or anything that exists here) is a directory."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


def load_parts(name_or_dir, parts: dict, what: str, local_files_only: bool = False,
               dtype: torch.dtype | None = None) -> dict:
    """Load components of a diffusers-layout folder or hub repo, one subfolder each: {subfolder: class}.

    Only the parts named are read (never a pipeline's image encoder or super-resolution stages). A
    missing folder, or a hub id neither cached nor downloadable, is a DecoderNotAvailableError at
    once, naming the repo and where it was looked for."""
    from huggingface_hub import constants

    name = os.fspath(name_or_dir)
    local = _is_local(name)
    where = str(Path(name).expanduser().resolve()) if local else name
    if local and not (Path(name).expanduser() / "model_index.json").is_file():
        raise DecoderNotAvailableError(
            f"{where!r} is not a {what} directory: it needs model_index.json and the component folders "
            f"({', '.join(parts)}), as diffusers' save_pretrained writes them")
    out = {}
    for sub, cls in parts.items():
        kw = dict(subfolder=sub, local_files_only=local_files_only)
        if dtype is not None and hasattr(cls, "dtype"):  # models, not tokenizers or schedulers
            kw["dtype" if cls.__module__.startswith("transformers") else "torch_dtype"] = dtype
        try:
            out[sub] = cls.from_pretrained(where, **kw)
        except (OSError, ValueError) as e:  # huggingface_hub's offline and not-found errors are OSErrors
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            if local:
                raise DecoderNotAvailableError(f"could not load the {what}'s {sub!r} part from the folder "
                                               f"{where}: {why}") from e
            raise DecoderNotAvailableError(
                f"could not load the {what} {name!r} (its {sub!r} part): it is not in the local Hugging Face "
                f"cache ({constants.HF_HUB_CACHE}) and cannot be downloaded from here ({why}).\nOn a machine "
                f"with network: `huggingface-cli download {name} --local-dir DIR`, then from_pretrained(DIR)") from e
    return out


def clip_hint(arch: str) -> str:
    tag = {**CLIP_PRETRAINED, "ViT-L-14": "openai"}.get(arch)
    return f"load_clip({arch!r}, pretrained={tag!r})" if tag else f"load_clip({arch!r}, pretrained=...)"


def check_pairing(error, what: str, embed_dim: int, clip_name: str, clip) -> None:
    """Raise `error` unless `clip` has this model's embedding size and architecture; the message names
    both CLIPs and how to load the right one."""
    if int(clip.embed_dim) != int(embed_dim):
        raise error(f"{what} takes {embed_dim}-d {clip_name!r} image embeddings, but the CLIP given is "
                    f"{clip.name!r} ({clip.embed_dim}-d); load the matching CLIP: {clip_hint(clip_name)}")
    if _arch_key(clip_name) not in _arch_key(clip.name):
        raise error(f"{what} pairs with {clip_name!r}, but the CLIP given is {clip.name!r}; load "
                    f"{clip_hint(clip_name)} or, if it is that model under another name, pass "
                    f"clip_name={clip.name!r} when building it")


@torch.no_grad()
def zero_image_embedding(clip) -> torch.Tensor:
    """(D,) raw (unnormalised) float32 embedding of the all-zero preprocessed image through a clipspace
    CLIP: what `get_zero_embed` computes with a pipeline's image encoder (zeros after normalisation)."""
    p = next(clip.model.parameters())
    s = clip.image_size
    z = clip.model.encode_image(torch.zeros(1, 3, s, s, device=p.device, dtype=p.dtype), normalize=False)
    return z[0].float().cpu()


def resolve_embedding_norm(embedding_norm, clip, zero_embed) -> float | None:
    """The stated norm unit z is scaled to: the one given, else the zero-image embedding's norm."""
    if embedding_norm is not None:
        if not math.isfinite(float(embedding_norm)) or float(embedding_norm) <= 0:
            raise InvalidArgumentError(f"embedding_norm must be a positive number, got {embedding_norm!r}")
        return float(embedding_norm)
    if zero_embed is not None:
        return float(torch.as_tensor(zero_embed).detach().float().norm())
    if clip is not None:
        return float(zero_image_embedding(clip).norm())
    return None


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------
class KandinskyDecoder(UNetDecoder):
    """A `Decoder` over the UNet and MoVQ of a `KandinskyV22Pipeline` (its scheduler's config as DDIM)."""

    what = "Kandinsky 2.2 decoder"

    def __init__(self, unet, movq, scheduler, clip_name: str, zero_embed: torch.Tensor | None = None,
                 embedding_norm: float | None = None, clip=None, image_size: int | None = None):
        self.unet, self.movq = unet, movq
        cfg = unet.config
        if cfg.addition_embed_type != "image" or cfg.encoder_hid_dim_type != "image_proj":
            raise ValueError(f"not a Kandinsky 2.2 decoder UNet: addition_embed_type={cfg.addition_embed_type!r}, "
                             f"encoder_hid_dim_type={cfg.encoder_hid_dim_type!r} (expected 'image', 'image_proj')")
        # leading spacing and no clipping: DDIM inversion needs both (see unclip/latents.py)
        self.scheduler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="leading", clip_sample=False)
        self.embed_dim = int(cfg.encoder_hid_dim)
        self.clip_name = clip_name
        if clip is not None:
            self.check_clip(clip)
            zero_embed = zero_image_embedding(clip) if zero_embed is None else zero_embed
        self.zero_embed = None if zero_embed is None else torch.as_tensor(zero_embed).detach().float().reshape(-1).cpu()
        if self.zero_embed is not None and len(self.zero_embed) != self.embed_dim:
            raise InvalidArgumentError(f"zero_embed has {len(self.zero_embed)} values, but the decoder takes "
                                       f"{self.embed_dim}-d embeddings")
        self.embedding_norm = resolve_embedding_norm(embedding_norm, clip, self.zero_embed)
        self.latent_scale = 2 ** (len(movq.config.block_out_channels) - 1)
        self.image_size = int(image_size or cfg.sample_size * self.latent_scale)

    def __repr__(self) -> str:
        return (f"KandinskyDecoder({self.image_size}px, clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"embedding_norm={self.embedding_norm}, prediction={self.scheduler.config.prediction_type})")

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "kandinsky-community/kandinsky-2-2-decoder",
                        clip_name: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, local_files_only: bool = False,
                        **kwargs) -> "KandinskyDecoder":
        """Load unet/, movq/ and scheduler/ from a local directory (diffusers layout) or a hub id (the
        Hugging Face cache, or a download if online). kwargs go to the constructor: `clip=` (checked,
        and gives the zero-image embedding), `zero_embed=`, `embedding_norm=`."""
        from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

        name = os.fspath(name_or_dir)
        parts = load_parts(name, {"unet": UNet2DConditionModel, "movq": VQModel, "scheduler": DDPMScheduler},
                           cls.what, local_files_only, dtype)
        if device is not None:
            parts["unet"].to(device)
            parts["movq"].to(device)
        clip_name = clip_name or HUB_MODELS.get(name.rstrip("/"), "")
        if not clip_name:
            raise ValueError(f"which CLIP does {name!r} pair with? pass clip_name='ViT-bigG-14' (Kandinsky 2.2)")
        return cls(parts["unet"], parts["movq"], parts["scheduler"], clip_name, **kwargs)

    # --- the Decoder protocol (device, dtype, latent_shape: UNetDecoder) ------------------------

    def to(self, device=None, dtype=None) -> "KandinskyDecoder":
        self.unet.to(device=device, dtype=dtype)
        self.movq.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.movq.encode(pixels.to(self.movq.device, self.movq.dtype)).latents

    @torch.no_grad()
    def decode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.movq.decode(x.to(self.movq.dtype), force_not_quantize=True).sample

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The image_embeds the UNet gets for unit-norm z: rescaled to the stated norm."""
        if self.embedding_norm is None:
            raise InvalidArgumentError("this Kandinsky decoder has no embedding_norm: build it with clip=, "
                                       "zero_embed= or embedding_norm= (KandinskyPrior.embedding_norm is best)")
        return z.to(self.device, self.dtype) * self.embedding_norm

    def negative_embeds(self, n: int) -> torch.Tensor:
        if self.zero_embed is None:
            raise InvalidArgumentError("guidance needs the unconditional embedding (the zero-image embedding): "
                                       "build the decoder with clip= (the CLIP it pairs with) or zero_embed=")
        return self.zero_embed.to(self.device, self.dtype).expand(n, -1)

    def _unet(self, x, t, image_embeds):
        out = self.unet(x, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": image_embeds}).sample
        return out[:, : x.shape[1]]  # epsilon; the learned-variance channels are dropped

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        c = self.condition(z)
        if guidance == 1.0:
            return self._unet(x, t, c)
        both = self._unet(torch.cat([x, x]), t, torch.cat([self.negative_embeds(len(c)), c]))
        uncond, cond = both.chunk(2)
        return classifier_free_guidance(uncond, cond, guidance)

    def check_clip(self, clip) -> None:
        check_pairing(DecoderMismatchError, self.what, self.embed_dim, self.clip_name, clip)


# ---------------------------------------------------------------------------------------------
# The prior: sampled as diffusers' unCLIP prior pipelines sample
# ---------------------------------------------------------------------------------------------
class PipelinePrior:
    """A caption-conditioned `PriorTransformer` with its own text encoder, sampled exactly as
    `KandinskyV22PriorPipeline` and `UnCLIPPipeline` do; `sample` returns unit-norm z_i.

    `pipe` is the diffusers pipeline holding `prior`, `text_encoder`, `tokenizer` (other parts may
    be None): its own `_encode_prompt` tokenises and encodes the captions (and the empty caption
    for guidance), so the conditioning is the pipeline's by construction."""

    what = "this prior"  # for messages
    pipeline_class = None  # set by subclasses
    scheduler_part = "scheduler"  # the pipeline's name for the prior's scheduler

    def __init__(self, pipe, clip_name: str, guidance: float = 4.0):
        self.pipe = pipe
        self.transformer = pipe.prior
        self.scheduler = getattr(pipe, self.scheduler_part)
        self.embed_dim = int(self.transformer.config.embedding_dim)
        self.clip_name = clip_name
        self.guidance = float(guidance)  # both pipelines default to 4
        self.clip = None  # kept for generate(); captions are read by the prior's own text encoder

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"guidance={self.guidance})")

    @classmethod
    def from_components(cls, prior, text_encoder, tokenizer, scheduler, clip_name: str, **kwargs):
        return cls(cls.make_pipe(prior, text_encoder, tokenizer, scheduler), clip_name, **kwargs)

    @classmethod
    def make_pipe(cls, prior, text_encoder, tokenizer, scheduler):
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, clip_name: str | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        local_files_only: bool = False, **kwargs):
        """Load prior/, text_encoder/, tokenizer/ and the prior's scheduler from a local directory
        (diffusers layout) or a hub id; no image encoder, decoder or super-resolution stage."""
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        name = os.fspath(name_or_dir)
        parts = load_parts(name, {"prior": PriorTransformer, "text_encoder": CLIPTextModelWithProjection,
                                  "tokenizer": CLIPTokenizer, cls.scheduler_part: UnCLIPScheduler},
                           cls.what, local_files_only, dtype)
        clip_name = clip_name or cls.hub_models().get(name.rstrip("/"), "")
        if not clip_name:
            raise ValueError(f"which CLIP does {name!r} pair with? pass clip_name=")
        prior = cls.from_components(parts["prior"], parts["text_encoder"], parts["tokenizer"],
                                    parts[cls.scheduler_part], clip_name, **kwargs)
        return prior.to(device) if device is not None else prior

    @classmethod
    def hub_models(cls) -> dict:
        return PRIOR_HUB_MODELS

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def to(self, device=None, dtype=None):
        self.transformer.to(device=device, dtype=dtype)
        self.pipe.text_encoder.to(device=device, dtype=dtype)
        return self

    @property
    def embedding_norm(self) -> float:
        """The root-mean-square norm of the raw embeddings the prior's statistics describe,
        sqrt(|clip_mean|^2 + |clip_std|^2): the norm its decoder saw, to scale unit z by."""
        t = self.transformer
        return math.sqrt(float(t.clip_mean.detach().float().pow(2).sum() + t.clip_std.detach().float().pow(2).sum()))

    def check_clip(self, clip) -> None:
        check_pairing(PriorMismatchError, self.what, self.embed_dim, self.clip_name, clip)

    @torch.no_grad()
    def sample(self, texts, n: int = 1, guidance: float | None = None, steps: int = 25, seed: int = 0,
               clip=None, best_of: int = 1) -> torch.Tensor:
        """n unit-norm image embeddings per caption, (len(texts) * n, D), caption by caption.

        Seeded: the initial noise and each step's ancestral noise come from one CPU generator seeded
        with `seed`, so the pipeline given the same noise and generator draws the same z_i. guidance:
        against the empty caption (None: 4, the pipelines' default); unlike the pipelines, which skip
        guidance at or below 1, a scale below 1 here interpolates toward the unconditional prior.
        best_of: keep, of that many candidates, the one closest (cosine) to the caption's text
        embedding. `clip`, if given, is checked to be this prior's CLIP; it does not read the captions."""
        from clipspace.unclip.latents import check_args
        from clipspace.unclip.prior import _count, check_guidance, check_texts

        texts = check_texts(texts)
        if isinstance(texts, torch.Tensor):
            raise InvalidArgumentError(f"{self.what} reads the captions' token states with its own text encoder: "
                                       "pass captions (strings), not text embeddings")
        n, best_of = _count("n", n), _count("best_of", best_of)
        (steps,) = check_args(steps=steps)
        guidance = self.guidance if guidance is None else check_guidance(guidance)
        if clip is not None:
            self.check_clip(clip)
        k = n * best_of
        guided = guidance != 1.0
        embeds, hidden, mask = self.pipe._encode_prompt(texts, self.device, k, guided)
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((len(texts) * k, self.embed_dim), generator=g)  # CPU: the same on every device
        z = self.sample_loop(embeds, hidden, mask, noise, steps, guidance, g)
        z = torch.nn.functional.normalize(z.float().cpu(), dim=-1)
        if best_of > 1:
            text = torch.nn.functional.normalize(embeds[len(embeds) // 2:] if guided else embeds, dim=-1).float().cpu()
            z, text = z.reshape(len(texts) * n, best_of, -1), text.reshape(len(texts) * n, best_of, -1)
            z = z[torch.arange(len(z)), (z * text).sum(-1).argmax(1)]
        return z

    @torch.no_grad()
    def sample_loop(self, embeds, hidden, mask, noise, steps: int, guidance: float, generator) -> torch.Tensor:
        """The pipelines' loop: UnCLIPScheduler steps with the next timestep passed explicitly; the raw
        (denormalised) z_i."""
        sched = UnCLIPScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps, device=self.device)
        ts = sched.timesteps
        x = noise.to(self.device, self.transformer.dtype) * sched.init_noise_sigma
        guided = guidance != 1.0
        for i, t in enumerate(ts):
            pred = self.transformer(torch.cat([x, x]) if guided else x, timestep=t, proj_embedding=embeds,
                                    encoder_hidden_states=hidden, attention_mask=mask).predicted_image_embedding
            if guided:
                uncond, cond = pred.chunk(2)
                pred = classifier_free_guidance(uncond, cond, guidance)
            prev = None if i + 1 == len(ts) else ts[i + 1]
            x = sched.step(pred, timestep=t, sample=x, generator=generator, prev_timestep=prev).prev_sample
        return self.transformer.post_process_latents(x)


class KandinskyPrior(PipelinePrior):
    """Kandinsky 2.2's prior (`KandinskyV22PriorPipeline`, image encoder not loaded)."""

    what = "Kandinsky 2.2 prior"

    @classmethod
    def make_pipe(cls, prior, text_encoder, tokenizer, scheduler):
        from diffusers import KandinskyV22PriorPipeline

        return KandinskyV22PriorPipeline(prior=prior, image_encoder=None, text_encoder=text_encoder,
                                         tokenizer=tokenizer, scheduler=scheduler, image_processor=None)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "kandinsky-community/kandinsky-2-2-prior",
                        clip_name: str | None = None, device=None, dtype=None, local_files_only: bool = False,
                        **kwargs) -> "KandinskyPrior":
        return super().from_pretrained(name_or_dir, clip_name, device, dtype, local_files_only, **kwargs)


# ---------------------------------------------------------------------------------------------
# Tiny components, for tests: Kandinsky 2.2's code path without its weights
# ---------------------------------------------------------------------------------------------
def tiny_tokenizer(max_length: int = 16):
    """A CLIPTokenizer over a local vocabulary (letters only, no merges: a word is its letters)."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2,
             **{c: i + 3 for i, c in enumerate(letters)}, **{c + "</w>": i + 29 for i, c in enumerate(letters)}}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length, pad_token="!")


def tiny_text_encoder(width: int, vocab_size: int = 55, max_length: int = 16, seed: int = 0):
    """A CLIPTextModelWithProjection whose token width and projection are both `width` (the priors'
    and Karlo's text projection need the two equal, as ViT-bigG's and ViT-L's are)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, projection_dim=width, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1, pad_token_id=2)).eval()


def tiny_prior(embed_dim: int, max_length: int = 16, seed: int = 0) -> PriorTransformer:
    """diffusers' test prior (2 heads of 12, one layer) over `max_length` text tokens, with data-like
    statistics (diffusers initialises clip_std to 0, which would collapse every sample to clip_mean)."""
    torch.manual_seed(seed)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=embed_dim, num_layers=1,
                             num_embeddings=max_length)
    with torch.no_grad():
        prior.clip_mean.normal_(0, 0.1)
        prior.clip_std.uniform_(0.5, 1.0)
    return prior.eval()


def tiny_components(embed_dim: int = 128, seed: int = 0) -> dict:
    """KandinskyV22Pipeline components at toy size (16 px images, 8x8 MoVQ latents), randomly
    initialised from diffusers' own fast-test configs: `KandinskyV22Pipeline(**tiny_components())`."""
    from diffusers import UNet2DConditionModel, VQModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=8, addition_embed_type="image", encoder_hid_dim=embed_dim,
        encoder_hid_dim_type="image_proj", cross_attention_dim=32, down_block_types=(
            "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"), up_block_types=(
            "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
        class_embed_type=None)
    movq = VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
                   vq_embed_dim=4)
    # the real decoder's schedule (DDPM linear 0.00085-0.012, epsilon, steps_offset 1), as the decoder reads it
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                              timestep_spacing="leading")
    return dict(unet=unet.eval(), scheduler=scheduler, movq=movq.eval())


def tiny_prior_components(embed_dim: int = 128, max_length: int = 16, seed: int = 0) -> dict:
    """KandinskyV22PriorPipeline components at toy size, with the pipeline's UnCLIPScheduler and a
    tiny image encoder (the pipeline's get_zero_embed needs one; clipspace's prior does not load it)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    tok = tiny_tokenizer(max_length)
    torch.manual_seed(seed + 1)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=32, projection_dim=embed_dim, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=8)).eval()
    return dict(prior=tiny_prior(embed_dim, max_length, seed),
                text_encoder=tiny_text_encoder(embed_dim, len(tok), max_length, seed),
                tokenizer=tok,
                # the real prior's scheduler: x0 prediction, fixed_small_log variance, x0 clipped to +-10
                scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                          num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0),
                image_encoder=image_encoder,
                image_processor=CLIPImageProcessor(crop_size=32, size=32))
