"""Pretrained unCLIP stacks behind one loader: each decoder (and prior) with the CLIP it was trained on.

    from clipspace.unclip.stacks import load_unclip, stacks_for
    stack = load_unclip("kandinsky-2-2", device="cuda", dtype=torch.float16)
    clip, decoder, prior = stack.clip, stack.decoder, stack.prior
    lat = unclip.invert(decoder, clip, images)           # the bipartite latent, as with the offline decoder
    stacks_for(clip)                                     # ['kandinsky-2-2']: the stacks that pair with it

A decoder draws only the embeddings of the CLIP it was trained on: the registry `STACKS` below is
that pairing, as data (one `StackSpec` per name: hub repos, CLIP architecture and tag, embedding size,
resolution, diffusion space, licence, a VRAM estimate). `docs/pretrained-stacks.md` is the same table.

Loading, in order (`load_stack`):
1. Where each part is: `decoder_dir=` / `prior_dir=` (a folder in diffusers' layout, e.g. written by
   `pipe.save_pretrained` or `huggingface-cli download REPO --local-dir DIR`), else the repo's snapshot in
   the Hugging Face cache, else (online only) the hub id, downloaded once.
2. Offline (`HF_HUB_OFFLINE=1`, or `local_files_only=True`) with anything missing: one
   `UnclipStackNotAvailableError` at once, before loading gigabytes, listing every missing part with
   its repo and the folder looked in (`missing_weights(name)` gives the same list without raising).
3. The CLIP through `load_clip(arch, pretrained=tag)`, or the `clip=` given, checked against the spec
   (`check_pairing`: a CLIP of the wrong size or architecture names both and the right one).
4. The prior, then the decoder, through their adapters' `from_pretrained`, imported only when asked
   for (`clipspace/unclip/{stable_unclip,image_variations,kandinsky,karlo}.py`).
5. Every stack was trained on raw (unnormalised) CLIP embeddings; unit z is scaled by one typical norm,
   from where the spec says (`norm_from`): the adapter's own weights (Stable unCLIP's normaliser), the
   prior's clip_mean / clip_std (Kandinsky, Karlo), or measured on the stack's CLIP over the bundled
   photos (`raw_embedding_norm`: SD image variations, which stores none).
6. The stack is remembered (weakly) against its CLIP object, so `decoder_for(stack.clip)` (what every
   notebook asks) returns the stack's decoder while the stack is kept: a notebook runs on a stack
   through its first cell.

`tiny_stack(name)` builds the same family from tiny random components, saves them to a folder in
diffusers' layout and loads that folder through `load_stack`: the tests drive the real load path.
"""
from __future__ import annotations

import os
import re
import tempfile
import weakref
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path

import torch

from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, UnclipStackNotAvailableError, \
    UnknownModelError


@dataclass(frozen=True)
class StackSpec:
    """One pretrained stack: where its parts live and which CLIP it pairs with."""

    name: str
    decoder: str  # "module:Class" under clipspace.unclip
    decoder_repo: str
    clip_arch: str  # open_clip architecture
    clip_pretrained: str | None  # open_clip tag (None: random weights, the tiny stacks)
    embed_dim: int
    resolution: int  # pixels of a decoded image
    space: str  # what the diffusion runs on
    licence: str
    vram: str  # weights only, from parameter counts x bytes (activations extra); no real weights ran here
    prior: str | None = None
    prior_repo: str | None = None
    # where the raw-embedding norm that unit z is scaled to comes from: "adapter" (its own weights: Stable
    # unCLIP's normaliser), "prior" (the prior's clip_mean / clip_std), "clip" (measured on the stack's CLIP)
    norm_from: str = "adapter"
    decoder_takes_clip: bool = False  # the adapter's constructor wants clip= (for its unconditional embedding)
    caveat: str = ""


STACKS = {s.name: s for s in (
    StackSpec("kandinsky-2-2", "kandinsky:KandinskyDecoder", "kandinsky-community/kandinsky-2-2-decoder",
              "ViT-bigG-14", "laion2b_s39b_b160k", 1280, 512, "MoVQ latents (4 x 64 x 64)", "Apache-2.0",
              "~16 GB of weights: UNet 1.22B + MoVQ 0.07B + prior 1.0B + its bigG text tower 0.7B in fp16 (6 GB), "
              "plus ViT-bigG-14 in fp32 as load_clip loads it (2.5B, 10 GB)",
              prior="kandinsky:KandinskyPrior", prior_repo="kandinsky-community/kandinsky-2-2-prior",
              norm_from="prior", decoder_takes_clip=True,
              caveat="the unconditional input is the embedding of an all-zero image; learned variance dropped"),
    StackSpec("karlo", "karlo:KarloDecoder", "kakaobrain/karlo-v1-alpha",
              "ViT-L-14", "openai", 768, 64, "pixels (3 x 64 x 64)", "CreativeML OpenRAIL-M",
              "~6 GB of weights: decoder 0.9B + prior 1.0B + two copies of the ViT-L text tower 0.12B in fp16 "
              "(4.3 GB), plus ViT-L-14 in fp32 (0.43B, 1.7 GB)",
              prior="karlo:KarloPrior", prior_repo="kakaobrain/karlo-v1-alpha", norm_from="prior",
              decoder_takes_clip=True,
              caveat="deprecated in diffusers (imported from diffusers.pipelines.deprecated.unclip); 64 px, "
                     "no super-resolution; a learned null embedding for guidance; one repo holds both stages"),
    StackSpec("stable-unclip-h", "stable_unclip:StableUnclipDecoder", "stabilityai/stable-diffusion-2-1-unclip",
              "ViT-H-14", "laion2b_s32b_b79k", 1024, 768, "SD 2 VAE latents (4 x 96 x 96)", "CreativeML OpenRAIL++-M",
              "~6.5 GB of weights: UNet 0.87B + VAE 0.08B + OpenCLIP-H text tower 0.35B in fp16 (2.6 GB), plus "
              "ViT-H-14 in fp32 (0.99B, 3.9 GB)",
              caveat="noise augmentation of z (noise_level); raw embeddings at the normaliser's typical norm"),
    StackSpec("stable-unclip-l", "stable_unclip:StableUnclipDecoder", "stabilityai/stable-diffusion-2-1-unclip-small",
              "ViT-L-14", "openai", 768, 768, "SD 2 VAE latents (4 x 96 x 96)", "CreativeML OpenRAIL++-M",
              "~4.3 GB of weights: UNet, VAE and OpenCLIP-H text tower as above in fp16 (2.6 GB), plus ViT-L-14 "
              "in fp32 (1.7 GB)",
              caveat="as stable-unclip-h"),
    StackSpec("sd-image-variations", "image_variations:ImageVariationsDecoder",
              "lambdalabs/sd-image-variations-diffusers", "ViT-L-14", "openai", 768, 512,
              "SD 1 VAE latents (4 x 64 x 64)", "CreativeML OpenRAIL-M",
              "~3.6 GB of weights: UNet 0.86B + VAE 0.08B in fp16 (1.9 GB), plus ViT-L-14 in fp32 (1.7 GB)",
              norm_from="clip",
              caveat="z is one cross-attention token; raw embeddings at the CLIP's typical norm (measured on load); "
                     "trained on 224 px squashes without anti-aliasing, not open_clip's crop; the model card's "
                     "revision is v2.0 (load_unclip reads the cached default branch: pass decoder_dir= to be sure)"),
)}


@dataclass
class UnclipStack:
    """A loaded stack: the CLIP, its decoder, and its prior (None where the family has none)."""

    name: str
    clip: object  # clipspace.clip.ClipModel
    decoder: object  # implements clipspace.unclip.decoder.Decoder
    prior: object | None = None

    def __repr__(self) -> str:
        return f"UnclipStack({self.name!r}, clip={self.clip!r}, decoder={self.decoder!r}, prior={self.prior!r})"


def get_spec(name: str) -> StackSpec:
    if name not in STACKS:
        import difflib

        close = difflib.get_close_matches(str(name), list(STACKS), n=3, cutoff=0.4)
        raise UnknownModelError(f"no unCLIP stack named {name!r}" + (f" (close: {', '.join(close)})" if close else "")
                                + f"; the stacks are {', '.join(STACKS)}")
    return STACKS[name]


def clip_call(spec: StackSpec) -> str:
    """The load_clip call that gives a stack's CLIP, as a user would type it."""
    return f"load_clip({spec.clip_arch!r}" + (f", pretrained={spec.clip_pretrained!r})" if spec.clip_pretrained else ")")


# ---------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------
def _key(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("hf-hub:", ""))


def _tag_repo(arch: str, tag: str | None) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    return (cfg or {}).get("hf_hub", "").strip("/")


def pairs_with(spec: StackSpec, clip) -> bool:
    """Whether `clip` is (as far as its name and tag tell) the CLIP the stack was trained on: same size,
    same architecture (ViT-L-14 is not ViT-L-14-336), and the same weights where its tag says which.
    A CLIP without a tag (random weights) or from a checkpoint file is taken at its architecture's word."""
    if int(clip.embed_dim) != spec.embed_dim:
        return False
    k, c = _key(spec.clip_arch), _key(clip.name)
    if not (c == k or re.search(k + r"(?![0-9])", c)):
        return False
    tag = clip.pretrained
    if tag is None or tag == spec.clip_pretrained or spec.clip_pretrained is None:
        return True
    tag = str(tag)
    if tag.startswith("hf-hub:"):
        return tag[len("hf-hub:"):].strip("/") == _tag_repo(spec.clip_arch, spec.clip_pretrained)
    import open_clip

    return tag not in open_clip.list_pretrained_tags_by_model(spec.clip_arch)  # another known tag: other weights


def stacks_for(clip) -> list[str]:
    """The names of the stacks whose decoder was trained on this CLIP's embeddings."""
    return [name for name, spec in STACKS.items() if pairs_with(spec, clip)]


def check_pairing(spec: StackSpec, clip) -> None:
    """DecoderMismatchError naming the stack's CLIP, the one given and the call that loads the right one."""
    if pairs_with(spec, clip):
        return
    others = stacks_for(clip)
    raise DecoderMismatchError(
        f"load_unclip({spec.name!r}): its decoder draws {spec.embed_dim}-d {spec.clip_arch} "
        f"({spec.clip_pretrained or 'random weights'}) image embeddings, but the CLIP given is {clip.name!r} "
        f"(pretrained={clip.pretrained!r}, {clip.embed_dim}-d). Pass clip={clip_call(spec)} or leave clip out "
        f"to load it" + (f"; this CLIP pairs with {', '.join(repr(o) for o in others)}" if others else ""))


def pairing_hint(clip) -> str:
    """One clause for `decoder_for`'s reason: which stacks pair with `clip`, or that none does and which exist."""
    entry = _LOADED.get(id(clip))
    if entry is not None and entry[0]() is clip:  # loaded with this CLIP, and freed since
        return (f"the stack {entry[3]!r} loaded with this CLIP was freed: keep a reference to it "
                f"(stack = load_unclip({entry[3]!r}, ...); clip = stack.clip)")
    return _which_stacks(clip)


def _which_stacks(clip) -> str:
    names = stacks_for(clip)
    if names:
        return ("with a GPU, " + " or ".join(f"load_unclip({n!r})" for n in names) +
                " loads a decoder that pairs with it (use that stack's .clip and .decoder)")
    return ("no pretrained stack pairs with it either; each loads its own CLIP: " +
            ", ".join(f"load_unclip({n!r}) ({s.clip_arch} {s.clip_pretrained}, {s.embed_dim}-d)"
                      for n, s in STACKS.items()))


# ---------------------------------------------------------------------------------------------
# Where the weights are
# ---------------------------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from clipspace.factory import _offline

    return _offline()


def repo_folder(repo: str) -> Path:
    """Where the hub cache keeps a repo (whether or not it is there)."""
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def cached_snapshot(repo: str) -> Path | None:
    """The snapshot folder of a diffusers repo in the hub cache, if its model_index.json and some weights are there."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, "model_index.json", cache_dir=str(hub_cache_dir()))
    if not isinstance(hit, str):
        return None
    folder = Path(hit).parent
    has_weights = any(folder.rglob("*.safetensors")) or any(folder.rglob("*.bin"))
    return folder if has_weights else None


def clip_weights_cached(arch: str, tag: str | None) -> tuple[bool, str, Path]:
    """(present, repo or file looked for, folder looked in) for an open_clip architecture and tag."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if not cfg:
        return True, arch, hub_cache_dir()  # no tag (random weights) or a file the user gave: nothing to look for
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME] if not filename else [filename]
        for n in names:
            if isinstance(try_to_load_from_cache(repo, n, cache_dir=str(hub_cache_dir())), str):
                return True, repo, repo_folder(repo)
    if cfg.get("url"):
        url_file = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if url_file.is_file():
            return True, str(url_file), url_file.parent
    return False, (hub.strip("/") or cfg.get("url", arch)), repo_folder(hub.strip("/")) if hub else hub_cache_dir()


def missing_weights(name: str, decoder_dir=None, prior_dir=None, clip=None) -> list[dict]:
    """What `load_unclip(name)` would need and is not on this machine: one dict per part
    (part, repo, looked_in). Empty when everything is local. Looks only; loads nothing."""
    spec = get_spec(name) if isinstance(name, str) else name
    out = []
    if clip is None:
        ok, repo, where = clip_weights_cached(spec.clip_arch, spec.clip_pretrained)
        if not ok:
            out.append({"part": "clip", "repo": repo, "looked_in": str(where),
                        "what": f"CLIP {spec.clip_arch} {spec.clip_pretrained}"})
    for part, repo, folder in (("decoder", spec.decoder_repo, decoder_dir), ("prior", spec.prior_repo, prior_dir)):
        if repo is None and folder is None:
            continue
        if folder is not None:
            if not (Path(folder).expanduser() / "model_index.json").is_file():
                out.append({"part": part, "repo": repo, "looked_in": str(folder), "what": f"{part} folder"})
        elif cached_snapshot(repo) is None:
            out.append({"part": part, "repo": repo, "looked_in": str(repo_folder(repo)), "what": part})
    return out


def _not_available(spec: StackSpec, missing: list[dict]) -> UnclipStackNotAvailableError:
    parts = "; ".join(f"{m['what']}: {m['repo']} (looked in {m['looked_in']})" for m in missing)
    fixes = " ".join(f"`huggingface-cli download {m['repo']}`" for m in missing if m["part"] != "clip" or "/" in m["repo"])
    err = UnclipStackNotAvailableError(
        f"load_unclip({spec.name!r}): offline (HF_HUB_OFFLINE=1 or local_files_only) and not on this machine: "
        f"{parts}. Hub cache: {hub_cache_dir()} (set HF_HOME or HF_HUB_CACHE to use another). On a machine with "
        f"network: {fixes}, then copy the cache here; or pass decoder_dir= / prior_dir= (folders in diffusers' "
        f"layout) and clip= (a loaded CLIP)")
    err.missing = missing
    return err


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def _adapter(path: str):
    module, cls = path.split(":")
    return getattr(import_module(f"clipspace.unclip.{module}"), cls)


def _source(repo: str | None, folder, part: str, is_offline: bool) -> str:
    """The path or hub id a part is loaded from (see the module docstring, step 1)."""
    if folder is not None:
        folder = Path(folder).expanduser()
        if not (folder / "model_index.json").is_file():
            raise DecoderNotAvailableError(f"{part}_dir={str(folder)!r} is not a folder in diffusers' layout: it "
                                           "needs model_index.json and the component folders (pipe.save_pretrained)")
        return str(folder)
    snap = cached_snapshot(repo)
    return str(snap) if snap is not None else repo  # a hub id only when online (offline: refused before)


@torch.inference_mode()
def raw_embedding_norm(clip, images=None) -> float:
    """The mean norm of `clip`'s raw (unnormalised) image embeddings of `images` (default: the photos
    bundled with scikit-image, `clipspace.photos.PHOTOS`): the scale a decoder trained on raw
    embeddings expects, for clipspace's unit ones. Read as `encode_images` reads them."""
    from clipspace.photos import PHOTOS, photo
    from clipspace.unclip.latents import load_images

    pils = load_images([photo(n) for n in PHOTOS] if images is None else images, clip.image_size)
    dtype = next(clip.model.parameters()).dtype
    x = torch.stack([clip.preprocess(p) for p in pils]).to(clip.device, dtype)
    return float(clip.model.encode_image(x, normalize=False).float().norm(dim=-1).mean())


def load_stack(spec: StackSpec, device=None, dtype=None, local_files_only: bool | None = None, *, clip=None,
               decoder_dir=None, prior_dir=None, decoder_kwargs: dict | None = None,
               prior_kwargs: dict | None = None) -> UnclipStack:
    """Load the stack `spec` describes (see the module docstring for the order)."""
    from clipspace.factory import load_clip

    is_offline = offline() if local_files_only is None else bool(local_files_only)
    if clip is not None:
        check_pairing(spec, clip)  # the cheapest mistake first
    if is_offline and (missing := missing_weights(spec, decoder_dir, prior_dir, clip)):
        raise _not_available(spec, missing)
    if clip is None:
        clip = load_clip(spec.clip_arch, pretrained=spec.clip_pretrained, device=device)
        check_pairing(spec, clip)
    prior = None
    if spec.prior is not None:  # first: its statistics give the decoder's embedding norm
        prior = _adapter(spec.prior).from_pretrained(
            _source(spec.prior_repo, prior_dir, "prior", is_offline), clip_name=spec.clip_arch, device=device,
            dtype=dtype, local_files_only=is_offline, **(prior_kwargs or {}))
        prior.check_clip(clip)
        if getattr(prior, "clip", 0) is None:
            prior.clip = clip  # generate() and sample(captions) find the stack's CLIP here
    kw = {"clip": clip} if spec.decoder_takes_clip else {}
    if spec.norm_from == "prior":
        kw["embedding_norm"] = prior.embedding_norm
    decoder = _adapter(spec.decoder).from_pretrained(
        _source(spec.decoder_repo, decoder_dir, "decoder", is_offline), clip_name=spec.clip_arch, device=device,
        dtype=dtype, local_files_only=is_offline, **{**kw, **(decoder_kwargs or {})})
    if spec.norm_from == "clip" and getattr(decoder, "embedding_norm", 0.0) is None:
        decoder.embedding_norm = raw_embedding_norm(clip)
    decoder.check_clip(clip)
    stack = UnclipStack(spec.name, clip, decoder, prior)
    remember(stack)
    return stack


def load_unclip(name: str, device=None, dtype=None, local_files_only: bool | None = None, **kwargs) -> UnclipStack:
    """A pretrained unCLIP stack by name (`STACKS`): its CLIP, decoder and prior (None where the family
    has none). kwargs: clip= (a loaded CLIP to use instead, checked), decoder_dir= / prior_dir= (folders
    in diffusers' layout), decoder_kwargs= / prior_kwargs= (to the adapters' from_pretrained).
    local_files_only None: offline when HF_HUB_OFFLINE is set."""
    return load_stack(get_spec(name), device, dtype, local_files_only, **kwargs)


# ---------------------------------------------------------------------------------------------
# Stacks remembered against their CLIP, for decoder_for
# ---------------------------------------------------------------------------------------------
_LOADED: dict[int, tuple] = {}  # id(clip) -> (weakref to clip, weakref to decoder, weakref to prior or None, name)


def remember(stack: UnclipStack) -> None:
    """Remember the stack's decoder and prior against its CLIP object (weakly: nothing is kept alive)."""
    ref = lambda o: weakref.ref(o) if o is not None else None  # noqa: E731
    for key in [k for k, v in _LOADED.items() if v[0]() is None]:  # CLIPs gone since
        del _LOADED[key]
    _LOADED[id(stack.clip)] = (ref(stack.clip), ref(stack.decoder), ref(stack.prior), stack.name)


def loaded_stack(clip) -> UnclipStack | None:
    """The stack loaded with this very CLIP object, while its decoder is alive; else None. Weak on
    purpose (a stack holds gigabytes): keep the stack, or its decoder, referenced (`stack = load_unclip(...)`)."""
    entry = _LOADED.get(id(clip))
    if entry is None or entry[0]() is not clip or entry[1]() is None:
        return None
    return UnclipStack(entry[3], clip, entry[1](), entry[2]() if entry[2] is not None else None)


# ---------------------------------------------------------------------------------------------
# Tiny stacks, for tests: tiny random components through the real load path
# ---------------------------------------------------------------------------------------------
def _tiny_pipelines(family: str, embed_dim: int, seed: int) -> tuple:
    """(decoder pipeline, prior pipeline or None) of a family at toy size, from its adapter's tiny components."""
    mod = import_module(f"clipspace.unclip.{family}")
    if family == "stable_unclip":
        from diffusers import StableUnCLIPImg2ImgPipeline

        return StableUnCLIPImg2ImgPipeline(feature_extractor=None, image_encoder=None,
                                           **mod.tiny_components(embed_dim=embed_dim, seed=seed)), None
    if family == "image_variations":
        return mod.tiny_pipeline(embed_dim=embed_dim, seed=seed), None
    if family == "kandinsky":
        from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

        return (KandinskyV22Pipeline(**mod.tiny_components(embed_dim=embed_dim, seed=seed)),
                KandinskyV22PriorPipeline(**mod.tiny_prior_components(embed_dim=embed_dim, seed=seed)))
    if family == "karlo":  # both stages in UnCLIPPipeline's layout, as kakaobrain/karlo-v1-alpha holds them
        parts = dict(prior=None, decoder=None, text_encoder=None, tokenizer=None, text_proj=None, super_res_first=None,
                     super_res_last=None, prior_scheduler=None, decoder_scheduler=None, super_res_scheduler=None)
        return (mod.UnCLIPPipeline(**{**parts, **mod.tiny_components(embed_dim=embed_dim, seed=seed)}),
                mod.UnCLIPPipeline(**{**parts, **mod.tiny_prior_components(embed_dim=embed_dim, seed=seed)}))
    raise ValueError(f"no tiny components for the {family!r} family")


def _save_tiny(spec: StackSpec, embed_dim: int, folder: Path, seed: int) -> tuple[Path, Path | None]:
    """Build the family's tiny components and save them as diffusers folders; (decoder_dir, prior_dir)."""
    decoder_pipe, prior_pipe = _tiny_pipelines(spec.decoder.split(":")[0], embed_dim, seed)
    decoder_pipe.save_pretrained(folder / "decoder")
    if prior_pipe is not None:
        prior_pipe.save_pretrained(folder / "prior")
    return folder / "decoder", (folder / "prior" if prior_pipe is not None else None)


def tiny_stack(name: str, clip=None, folder=None, seed: int = 0, **kwargs) -> UnclipStack:
    """The stack `name` at toy size: its family's tiny random components (the adapters' `tiny_components`)
    sized to `clip` (default: the offline CLIP, `load_clip()`), saved in diffusers' layout under `folder`
    (default: a temporary folder, removed once loaded) and loaded back through `load_stack`, offline. Random weights:
    for the code path (parity, shapes, errors), not for pictures."""
    from clipspace.factory import load_clip

    clip = load_clip() if clip is None else clip
    base = get_spec(name)
    spec = replace(base, clip_arch=clip.name, clip_pretrained=None, embed_dim=int(clip.embed_dim),
                   decoder_repo=f"tiny/{base.name}-decoder", prior_repo=f"tiny/{base.name}-prior" if base.prior else None)
    if folder is None:  # everything is in memory once loaded: the folder goes with the context
        with tempfile.TemporaryDirectory(prefix=f"clipspace-tiny-{name}-") as tmp:
            return tiny_stack(name, clip, tmp, seed, **kwargs)
    decoder_dir, prior_dir = _save_tiny(spec, spec.embed_dim, Path(folder), seed)
    return load_stack(spec, clip=clip, decoder_dir=decoder_dir, prior_dir=prior_dir, local_files_only=True, **kwargs)


def pairing_table() -> str:
    """The registry as the markdown table of docs/pretrained-stacks.md (a test keeps the two equal)."""
    rows = ["| stack | CLIP (`load_clip`) | embedding | px | diffusion space | prior | licence | VRAM (estimate) |",
            "|---|---|---|---|---|---|---|---|"]
    for s in STACKS.values():
        rows.append(f"| `{s.name}` | {s.clip_arch} `{s.clip_pretrained}` | {s.embed_dim}-d | {s.resolution} | {s.space} | "
                    f"{'yes' if s.prior else 'no'} | {s.licence} | {s.vram} |")
    return "\n".join(rows)
