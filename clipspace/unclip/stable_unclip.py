"""Stable unCLIP as a `Decoder`: the same bipartite-latent API (`unclip/latents.py`) on a pretrained model.

For users with a GPU and the weights: `stabilityai/stable-diffusion-2-1-unclip` pairs with OpenCLIP
ViT-H/14 (1024-d: `load_clip("ViT-H-14", pretrained="laion2b_s32b_b79k")`), the `-small` variant with
OpenAI ViT-L/14 (768-d: `load_clip("ViT-L-14", pretrained="openai")`).

    dec = StableUnclipDecoder.from_pretrained("stabilityai/stable-diffusion-2-1-unclip", device="cuda",
                                              dtype=torch.float16)
    lat = unclip.invert(dec, clip, images)          # z_i from your CLIP, x_T in VAE latent space

What differs from the offline decoder, all inside this class:
- diffusion runs on VAE latents: `encode_pixels` is the VAE encoder's mean (deterministic, so
  inversion is repeatable) times the scaling factor; `decode_pixels` the VAE decoder;
- the UNet also cross-attends to text: the empty prompt's embedding, as the image-variation
  pipeline uses when given no prompt;
- z is noise-augmented exactly as the pipeline does, by calling its own `noise_image_embeddings`
  (normaliser scale, `image_noising_scheduler.add_noise` at `noise_level`, unscale, then the
  sinusoidal embedding of noise_level concatenated). Its noise is drawn from a fixed seed, so
  inversion and decoding see the same conditioning; noise_level 0 (the default) adds almost none;
- the unconditional branch of guidance is all zeros, as in the pipeline;
- scale: Stable unCLIP was trained on raw (unnormalised) CLIP embeddings, clipspace works with
  unit ones. z is multiplied by `embedding_norm`, by default the root-mean-square norm of the
  embeddings the normaliser's mean and std were measured on: sqrt(|mean|^2 + |std|^2). Shortcut:
  every image gets the typical norm, not its own (they vary by a few percent).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableUnCLIPImg2ImgPipeline

from clipspace.unclip.decoder import UNetDecoder, VaeLatents, classifier_free_guidance
from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError

HUB_MODELS = {  # hub id -> the open_clip architecture of the CLIP it was trained on
    "stabilityai/stable-diffusion-2-1-unclip": "ViT-H-14",
    "stabilityai/stable-diffusion-2-1-unclip-small": "ViT-L-14",
}


StableUnclipNotAvailableError = DecoderNotAvailableError  # the name this module's users know


def _arch_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("hf-hub:", ""))


class StableUnclipDecoder(UNetDecoder, VaeLatents):
    """A `Decoder` over the components of a `StableUnCLIPImg2ImgPipeline` (its image encoder unused)."""

    def __init__(self, pipe: StableUnCLIPImg2ImgPipeline, clip_name: str, noise_level: int = 0,
                 embedding_norm: float | None = None, noise_seed: int = 0):
        self.pipe = pipe
        self.unet, self.vae = pipe.unet, pipe.vae
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.embed_dim = int(pipe.image_normalizer.config.embedding_dim)
        self.clip_name = clip_name
        proj = self.unet.config.projection_class_embeddings_input_dim
        if self.unet.config.class_embed_type != "projection" or proj != 2 * self.embed_dim:
            raise ValueError(f"this UNet takes class_labels of {proj} dims, but the image normaliser is "
                             f"{self.embed_dim}-d (expected 2 x {self.embed_dim}: embedding + noise-level embedding)")
        if not 0 <= noise_level < pipe.image_noising_scheduler.config.num_train_timesteps:
            raise ValueError(f"noise_level must be in [0, {pipe.image_noising_scheduler.config.num_train_timesteps}), "
                             f"got {noise_level}")
        self.noise_level = int(noise_level)
        self.noise_seed = noise_seed
        norm = pipe.image_normalizer
        self.embedding_norm = float(embedding_norm) if embedding_norm is not None else \
            math.sqrt(float(norm.mean.detach().float().pow(2).sum() + norm.std.detach().float().pow(2).sum()))
        self.latent_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = int(self.unet.config.sample_size) * self.latent_scale
        with torch.no_grad():  # the empty prompt's text embedding, once
            self.prompt_embeds, _ = pipe.encode_prompt("", self.device, 1, False)

    def __repr__(self) -> str:
        return (f"StableUnclipDecoder({self.image_size}px, clip={self.clip_name!r}, embed_dim={self.embed_dim}, "
                f"noise_level={self.noise_level}, prediction={self.scheduler.config.prediction_type})")

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike = "stabilityai/stable-diffusion-2-1-unclip",
                        clip_name: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, local_files_only: bool = False,
                        **kwargs) -> "StableUnclipDecoder":
        """Load from a local directory (diffusers layout) or a hub id (the Hugging Face cache, or a
        download if online). The pipeline's own image encoder is not loaded: clipspace's CLIP gives z."""
        name = os.fspath(name_or_dir)
        # a hub id is exactly "org/name"; anything else is a directory
        looks_local = Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") != 1
        if looks_local and not (Path(name).expanduser() / "model_index.json").is_file():
            raise StableUnclipNotAvailableError(
                f"{name!r} is not a Stable unCLIP directory: it needs model_index.json and the component "
                f"folders (unet, vae, text_encoder, tokenizer, image_normalizer, image_noising_scheduler, scheduler)")
        try:
            pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(
                str(Path(name).expanduser()) if looks_local else name, image_encoder=None, feature_extractor=None,
                torch_dtype=dtype, local_files_only=local_files_only)
        except (OSError, ValueError) as e:  # huggingface_hub's offline and not-found errors are OSErrors
            raise StableUnclipNotAvailableError(
                f"could not load Stable unCLIP {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}\n"
                f"It is not in the local Hugging Face cache and cannot be downloaded from here. On a machine "
                f"with network: `huggingface-cli download {name} --local-dir DIR`, then "
                f"StableUnclipDecoder.from_pretrained(DIR)") from e
        if device is not None:
            pipe.to(device)
        clip_name = clip_name or HUB_MODELS.get(name.rstrip("/"), "")
        if not clip_name:
            raise ValueError(f"which CLIP does {name!r} pair with? pass clip_name='ViT-H-14' (2-1-unclip) "
                             f"or 'ViT-L-14' (2-1-unclip-small)")
        return cls(pipe, clip_name, **kwargs)

    # --- the Decoder protocol (device, dtype, latent_shape, encode/decode_pixels: UNetDecoder, VaeLatents) ---
    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """class_labels for unit-norm z: rescaled, then the pipeline's own noise augmentation."""
        z = z.to(self.device, self.dtype) * self.embedding_norm
        g = torch.Generator().manual_seed(self.noise_seed)
        noise = torch.randn(z.shape, generator=g).to(z)
        return self.pipe.noise_image_embeddings(z, self.noise_level, noise=noise)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        c = self.condition(z)
        text = self.prompt_embeds.to(x).expand(len(x), -1, -1)
        if guidance == 1.0:
            return self.unet(x, t, encoder_hidden_states=text, class_labels=c).sample
        both = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([text, text]),
                         class_labels=torch.cat([torch.zeros_like(c), c])).sample
        uncond, cond = both.chunk(2)
        return classifier_free_guidance(uncond, cond, guidance)

    def check_clip(self, clip) -> None:
        if int(clip.embed_dim) != self.embed_dim:
            raise DecoderMismatchError(
                f"Stable unCLIP here takes {self.embed_dim}-d {self.clip_name!r} image embeddings (its image "
                f"normaliser and class projection), but the CLIP given is {clip.name!r} ({clip.embed_dim}-d)")
        if _arch_key(self.clip_name) not in _arch_key(clip.name):
            raise DecoderMismatchError(
                f"Stable unCLIP here pairs with {self.clip_name!r}, but the CLIP given is {clip.name!r}; load "
                f"load_clip({self.clip_name!r}, pretrained=...) or, if it is that model under another name, "
                f"pass clip_name={clip.name!r} when building the decoder")


def tiny_components(embed_dim: int = 128, proj_dim: int | None = None, seed: int = 0) -> dict:
    """StableUnCLIPImg2ImgPipeline components at toy size (8x8 latents, 16-32 channels), randomly
    initialised from configs, as diffusers' fast tests build them: Stable unCLIP's code path (VAE
    latents, image normaliser, noise augmentation, SD 2.1's schedule) without its 5 GB of weights.
    `proj_dim` overrides the UNet's class-projection input (to build a mismatched pair)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c + "</w>": i + 2 for i, c in enumerate("abcdefgh")}}
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
    with torch.no_grad():  # statistics as a real normaliser has them: not 0 and 1
        normalizer.mean.normal_(0, 0.05)
        normalizer.std.uniform_(0.05, 0.1)
    return dict(
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=8),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)),
        unet=UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
            class_embed_type="projection", projection_class_embeddings_input_dim=proj_dim or 2 * embed_dim),
        # SD 2.1's sampling schedule: v-prediction, scaled-linear betas, steps_offset 1, no alpha_0 = 1
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        # scaling_factor: what SD's 0.18215 is for, latents of about unit variance (for this random VAE)
        vae=AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
                          norm_num_groups=8, scaling_factor=5.0,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
    )
