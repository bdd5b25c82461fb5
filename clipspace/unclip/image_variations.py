"""SD image variations as a `Decoder`: Stable Diffusion 1.4 fine-tuned to take one CLIP image embedding.

`lambdalabs/sd-image-variations-diffusers` (diffusers' `StableDiffusionImageVariationPipeline`) swaps
SD's 77 text tokens for a single cross-attention token: the raw (unnormalised) OpenAI CLIP ViT-L/14
image embedding (768-d, `load_clip("ViT-L-14", pretrained="openai")`). No text reaches the UNet.

    dec = ImageVariationsDecoder.from_pretrained("lambdalabs/sd-image-variations-diffusers", device="cuda",
                                                 dtype=torch.float16)
    dec.calibrate(clip)                          # the typical raw norm of this CLIP's image embeddings
    lat = unclip.invert(dec, clip, images)       # z_i from your CLIP, x_T in VAE latent space

What differs from the offline decoder, all inside this class:
- diffusion runs on SD's VAE latents: `encode_pixels` is the VAE encoder's mean (deterministic, so
  inversion is repeatable) times the scaling factor; `decode_pixels` the VAE decoder;
- z enters as the one cross-attention token (N, 1, 768), exactly as the pipeline's `_encode_image`
  builds it; the unconditional branch of guidance is all zeros, as there (and as training dropped it);
- the sampler is a DDIM on the pipeline's own schedule (SD 1.4's scaled-linear betas, steps_offset 1),
  with `clip_sample` off and "leading" spacing: the shipped scheduler is a PNDM whose config has no
  clip_sample, and DDIM's default (on) breaks inversion;
- scale: the model was trained on raw CLIP embeddings, clipspace works with unit ones, so z is
  multiplied by `embedding_norm`. There is no image normaliser to read a norm from (Stable unCLIP has
  one), so `calibrate(clip)` measures it: the mean raw norm of the CLIP's embeddings of the photos
  bundled with scikit-image (`clipspace.photos`). `load_unclip("sd-image-variations")` does this for
  you. Shortcut: every image gets that typical norm, not its own (they vary by some percent).
  Until a norm is set, `predict` refuses to guess.
- `config["guidance"]`: 3.0, the scale the model card uses, for panels that decode from random noise.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionImageVariationPipeline

from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, InvalidArgumentError
from clipspace.unclip.decoder import UNetDecoder, VaeLatents, classifier_free_guidance

HUB_MODELS = {  # hub id -> the open_clip architecture of the CLIP it was trained on
    "lambdalabs/sd-image-variations-diffusers": "ViT-L-14",
}
COMPONENTS = ("unet", "vae", "scheduler")  # the folders of the diffusers layout this adapter reads
MODEL_CARD_GUIDANCE = 3.0


def _arch_key(name: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("hf-hub:", ""))


def is_hub_id(name: str) -> bool:
    """A hub id is exactly "org/name" and not an existing path; anything else is a directory."""
    return not (Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") != 1)


class ImageVariationsDecoder(UNetDecoder, VaeLatents):
    """A `Decoder` over the UNet, VAE and scheduler of a `StableDiffusionImageVariationPipeline`."""

    def __init__(self, pipe: StableDiffusionImageVariationPipeline, clip_name: str,
                 embedding_norm: float | None = None):
        self.pipe = pipe
        self.unet, self.vae = pipe.unet, pipe.vae
        if self.unet.config.encoder_hid_dim_type is not None:
            raise ValueError(f"this UNet projects its context ({self.unet.config.encoder_hid_dim_type!r}): not an "
                             "image-variations UNet, which cross-attends to the CLIP embedding itself")
        # leading spacing and no sample clipping: both break DDIM inversion (clip_sample is DDIM's default)
        # (only DDIM's own keys: PNDM's skip_prk_steps would follow into every inverse scheduler, with a warning)
        own = inspect.signature(DDIMScheduler.__init__).parameters
        config = {k: v for k, v in pipe.scheduler.config.items() if k in own}
        self.scheduler = DDIMScheduler.from_config(config, clip_sample=False, timestep_spacing="leading")
        self.embed_dim = int(self.unet.config.cross_attention_dim)
        self.clip_name = str(clip_name)
        self.embedding_norm = None if embedding_norm is None else float(embedding_norm)
        self.latent_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = int(self.unet.config.sample_size) * self.latent_scale
        self.config = {"guidance": MODEL_CARD_GUIDANCE, "clip_model": self.clip_name, "clip_embed_dim": self.embed_dim}

    def __repr__(self) -> str:
        norm = "uncalibrated" if self.embedding_norm is None else f"{self.embedding_norm:.3g}"
        return (f"ImageVariationsDecoder({self.image_size}px, clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"embedding_norm={norm}, prediction={self.scheduler.config.prediction_type})")

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "lambdalabs/sd-image-variations-diffusers",
                        clip_name: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, local_files_only: bool = False,
                        embedding_norm: float | None = None, **kwargs) -> "ImageVariationsDecoder":
        """Load from a local directory (diffusers layout) or a hub id (the Hugging Face cache, or a
        download if online; `revision=` and `cache_dir=` go to diffusers). The pipeline's own image
        encoder and safety checker are not loaded: clipspace's CLIP gives z."""
        name = os.fspath(name_or_dir)
        local = not is_hub_id(name)
        if local and not (Path(name).expanduser() / "model_index.json").is_file():
            raise DecoderNotAvailableError(
                f"{name!r} is not an SD image-variations directory: it needs model_index.json and the component "
                f"folders {', '.join(COMPONENTS)} (diffusers' save_pretrained layout)")
        try:
            pipe = StableDiffusionImageVariationPipeline.from_pretrained(
                str(Path(name).expanduser()) if local else name, image_encoder=None, feature_extractor=None,
                safety_checker=None, requires_safety_checker=False, torch_dtype=dtype,
                local_files_only=local_files_only, **kwargs)
        except (OSError, ValueError) as e:  # huggingface_hub's offline and not-found errors are OSErrors
            raise DecoderNotAvailableError(
                f"could not load SD image variations {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}\n"
                f"It is not in the local Hugging Face cache and cannot be downloaded from here. On a machine "
                f"with network: `huggingface-cli download {name} --local-dir DIR`, then "
                f"ImageVariationsDecoder.from_pretrained(DIR)") from e
        if device is not None:
            pipe.to(device)
        clip_name = clip_name or HUB_MODELS.get(name.rstrip("/"), "")
        if not clip_name:
            raise ValueError(f"which CLIP does {name!r} pair with? pass clip_name='ViT-L-14' (the OpenAI CLIP "
                             "sd-image-variations was trained on)")
        return cls(pipe, clip_name, embedding_norm=embedding_norm)

    def calibrate(self, clip, images=None) -> "ImageVariationsDecoder":
        """Set `embedding_norm` to the mean raw norm of `clip`'s image embeddings of `images` (default:
        the bundled photos): the scale the model saw in training, if `clip` is the CLIP it was trained on."""
        from clipspace.unclip.stacks import raw_embedding_norm

        self.check_clip(clip)
        self.embedding_norm = raw_embedding_norm(clip, images)
        return self

    # --- the Decoder protocol (device, dtype, latent_shape, encode/decode_pixels: UNetDecoder, VaeLatents) ---
    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """encoder_hidden_states for unit-norm z: rescaled to the raw norm, one token each (N, 1, D)."""
        if self.embedding_norm is None:
            raise InvalidArgumentError(
                "embedding_norm is not set: this model takes raw CLIP embeddings, clipspace's are unit-norm. "
                "Call decoder.calibrate(clip) (measures it on the bundled photos), pass embedding_norm= to "
                "from_pretrained, or load the whole stack with load_unclip('sd-image-variations')")
        return (z.to(self.device, self.dtype) * self.embedding_norm).unsqueeze(1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        c = self.condition(z)
        if guidance == 1.0:
            return self.unet(x, t, encoder_hidden_states=c).sample
        both = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([torch.zeros_like(c), c])).sample
        uncond, cond = both.chunk(2)  # zeros: the unconditional, as the pipeline's _encode_image builds it
        return classifier_free_guidance(uncond, cond, guidance)

    def check_clip(self, clip) -> None:
        right = f"load_clip({self.clip_name!r}, pretrained='openai')" if _arch_key(self.clip_name) == "vitl14" \
            else f"load_clip({self.clip_name!r})"
        if int(clip.embed_dim) != self.embed_dim:
            raise DecoderMismatchError(
                f"SD image variations here takes {self.embed_dim}-d {self.clip_name!r} image embeddings (its "
                f"cross-attention width), but the CLIP given is {clip.name!r} ({clip.embed_dim}-d); load {right} "
                f"or the whole stack with load_unclip('sd-image-variations')")
        if _arch_key(self.clip_name) not in _arch_key(clip.name):
            raise DecoderMismatchError(
                f"SD image variations here pairs with {self.clip_name!r}, but the CLIP given is {clip.name!r}; "
                f"load {right} or, if it is that model under another name, pass clip_name={clip.name!r} "
                f"when building the decoder")


def tiny_components(embed_dim: int = 128, seed: int = 0) -> dict:
    """StableDiffusionImageVariationPipeline components at toy size (8x8 latents, 16-32 channels),
    randomly initialised from configs, as diffusers' fast tests build them: the adapter's code path
    (VAE latents, one cross-attention token, SD 1.4's PNDM schedule) without its 4 GB of weights.
    No image encoder: pass one to the pipeline yourself if you call it on images."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    return dict(
        unet=UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=embed_dim, attention_head_dim=4, norm_num_groups=8),
        # the shipped scheduler: SD 1.4's PNDM (no clip_sample in its config), which the adapter turns into a DDIM
        scheduler=PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False,
                                skip_prk_steps=True, steps_offset=1),
        # scaling_factor: what SD's 0.18215 is for, latents of about unit variance (for this random VAE)
        vae=AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
                          norm_num_groups=8, scaling_factor=5.0,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
    )


def tiny_pipeline(embed_dim: int = 128, seed: int = 0, image_encoder=None) -> StableDiffusionImageVariationPipeline:
    """The pipeline itself over `tiny_components` (no safety checker, no feature extractor)."""
    pipe = StableDiffusionImageVariationPipeline(image_encoder=image_encoder, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False, **tiny_components(embed_dim, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe
