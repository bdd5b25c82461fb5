"""`load_clip`: one call for any CLIP model, resolved to its weights and built by open_clip's factory.

Every route ends in `open_clip.create_model_and_transforms(..., weights_only=True)`:
- the offline default: `clipspace/weights/clipspace-tiny/` as an open_clip `local-dir:`;
- an architecture and tag (`"ViT-B-32", "openai"`): the weights file is looked up in the local
  caches first (so nothing touches the network when it is there), downloaded only when online;
- an architecture and a checkpoint file; a directory (`local-dir:` layout); `hf-hub:org/repo`.
Non-safetensors checkpoints are first opened with `torch.load(weights_only=True)` here, so a
pickle holding arbitrary objects is refused with a clear error before open_clip sees it.
"""
from __future__ import annotations

import difflib
import os
import pickle
import warnings
from pathlib import Path

import open_clip
import torch

from clipspace.cache import file_digest
from clipspace.clip import ClipModel
from clipspace.errors import ClipspaceError, UnknownModelError, UnsafeCheckpointError, WeightsNotAvailableError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "model_configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEFAULT_MODEL = "clipspace-tiny"
DEFAULT_WEIGHTS = WEIGHTS_DIR / DEFAULT_MODEL

open_clip.add_model_config(CONFIG_DIR)  # the tiny model is one more config, like ViT-B-32

HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
RANDOM_SEED = 0  # architectures asked for without weights are built from this seed: reproducible


def load_clip(name: str | os.PathLike | None = None, pretrained: str | None = None,
              device: str | torch.device | None = None) -> ClipModel:
    """Load a CLIP model through open_clip's factory (weights: safetensors or torch.load(weights_only=True)).

    - `load_clip()`: the offline default, a tiny CLIP trained on the shapes world (`clipspace.world`).
    - `load_clip("ViT-B-32", pretrained="openai")`: any open_clip architecture and tag
      (`open_clip.list_pretrained()`), or `pretrained="/path/to/checkpoint.safetensors"`. Without
      `pretrained`, an architecture gets seeded random weights (and a warning).
    - `load_clip("hf-hub:org/repo")`: a model from the Hugging Face hub.
    - `load_clip("/path/to/dir")` or `"local-dir:/path"`: a folder holding `open_clip_config.json` and weights.
    Weights already in the local caches load without the network; with HF_HUB_OFFLINE=1 missing ones
    raise WeightsNotAvailableError at once. `device`: "cpu" (default), "cuda", "mps".
    """
    device = _device(device)
    if name is None or (name == DEFAULT_MODEL and pretrained is None):
        return load_default(device, pretrained)
    name = os.fspath(name)
    if name.startswith((HF_HUB, LOCAL_DIR)) and pretrained is not None:
        raise ValueError(f"pretrained={pretrained!r} cannot be combined with {name!r}: an {name.split(':')[0]} "
                         "name carries its own weights")
    if name.startswith(LOCAL_DIR):
        return load_dir(Path(name[len(LOCAL_DIR):]).expanduser(), device)
    if name.startswith(HF_HUB):
        return load_hub(name[len(HF_HUB):], device)
    arch = name.replace("/", "-")  # open_clip's own spelling rule
    if arch in open_clip.list_models():
        return load_arch(arch, pretrained, device)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_dir(path, device)
    if path.is_file():
        raise UnknownModelError(f"{name!r} is a file; say which architecture it holds: "
                                f"load_clip('ViT-B-32', pretrained={name!r}), or give its folder with an open_clip_config.json")
    if os.sep in name or name.startswith((".", "~")):
        raise WeightsNotAvailableError(f"model folder not found: {name}")
    close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
    raise UnknownModelError(f"unknown model architecture {name!r}. " +
                            (f"Close matches: {', '.join(close)}. " if close else "") +
                            "See open_clip.list_models(), or pass a folder or an 'hf-hub:org/repo' name.")




def _device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "cpu":
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but torch sees no CUDA GPU; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but MPS is not available; use device='cpu'")
    return dev


def load_default(device: torch.device, pretrained: str | None = None) -> ClipModel:
    """The offline default: the tiny CLIP trained on the shapes world, shipped in clipspace/weights/."""
    if pretrained is not None:
        return load_arch(DEFAULT_MODEL, pretrained, device)
    weights = DEFAULT_WEIGHTS
    if not (weights / "open_clip_config.json").is_file() or not list(weights.glob("*.safetensors")):
        raise WeightsNotAvailableError(
            f"The offline default model's weights are not in {weights} yet. They are trained for this "
            f"package on the shapes world; train them with `python -m clipspace.train clip --out {weights}` "
            "(the trainer writes exactly this folder layout), or load another model, e.g. "
            "load_clip('ViT-B-32', pretrained='openai') or load_clip('/path/to/open_clip_folder').")
    return load_dir(weights, device, name=DEFAULT_MODEL)


def load_arch(arch: str, pretrained: str | None, device: torch.device) -> ClipModel:
    """An open_clip architecture with random weights (pretrained=None), a tag, or a checkpoint file."""
    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        warnings.warn(f"{arch} built with random weights (seed {RANDOM_SEED}); for trained weights pass "
                      f"pretrained= one of {tags or 'your checkpoint file'}", stacklevel=4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return _build(arch, None, device, arch, None, f"random-seed{RANDOM_SEED}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if tag_cfg:
        path = resolve_tag(arch, pretrained, tag_cfg)
        # The tag's own preprocess (mean, std, resize) and activation go with its weights.
        return _build(arch, path, device, arch, pretrained, weights_id(path),
                      force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)), image_mean=tag_cfg.get("mean"),
                      image_std=tag_cfg.get("std"), image_interpolation=tag_cfg.get("interpolation"),
                      image_resize_mode=tag_cfg.get("resize_mode"))
    path = Path(pretrained).expanduser()
    if path.is_file():
        return _build(arch, path, device, arch, str(path), weights_id(path))
    if path.is_dir():
        raise ValueError(f"pretrained={pretrained!r} is a folder; load it as load_clip({pretrained!r})")
    if os.sep in pretrained or path.suffix in CHECKPOINT_SUFFIXES:
        raise WeightsNotAvailableError(f"checkpoint file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.5)
    raise UnknownModelError(f"unknown pretrained tag {pretrained!r} for {arch}. " +
                            (f"Close matches: {', '.join(close)}. " if close else "") +
                            f"Known tags: {', '.join(tags) or 'none'}; or pass a checkpoint file path.")


def load_dir(path: Path, device: torch.device, name: str | None = None) -> ClipModel:
    """A folder in open_clip's local-dir layout: open_clip_config.json and a weights file."""
    if not path.is_dir():
        raise WeightsNotAvailableError(f"model folder not found: {path}")
    if not (path / "open_clip_config.json").is_file():
        raise WeightsNotAvailableError(f"{path} has no open_clip_config.json; a model folder holds that file "
                                       "and the weights (open_clip_model.safetensors)")
    from open_clip.factory import _find_checkpoint_in_dir

    ckpt = _find_checkpoint_in_dir(path)
    if ckpt is None:
        raise WeightsNotAvailableError(f"{path} holds open_clip_config.json but no weights file "
                                       "(*.safetensors, *.bin or *.pth)")
    return _build(f"{LOCAL_DIR}{path}", None, device, name or path.name, str(path), weights_id(Path(ckpt)),
                  checkpoint=Path(ckpt))


def load_hub(repo: str, device: torch.device) -> ClipModel:
    """`hf-hub:org/repo`: from the local hub cache when there (no network), else downloaded once."""
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    def cached_snapshot() -> Path | None:
        config = _hub_cached(repo, HF_CONFIG_NAME)
        weights = _hub_cached(repo, HF_SAFE_WEIGHTS_NAME) or _hub_cached(repo, HF_WEIGHTS_NAME)
        return config.parent if config and weights and config.parent == weights.parent else None

    if (snapshot := cached_snapshot()) is None:
        looked_for = [f"{repo}/{HF_CONFIG_NAME}", f"{repo}/{HF_SAFE_WEIGHTS_NAME} (or .bin)"]
        if _offline():
            raise _not_cached(f"{HF_HUB}{repo}", None, looked_for)
        try:
            from open_clip.pretrained import download_pretrained_from_hf

            download_pretrained_from_hf(repo, filename=HF_CONFIG_NAME)
            download_pretrained_from_hf(repo)
        except Exception as e:
            raise _not_cached(f"{HF_HUB}{repo}", None, looked_for, e) from None
        if (snapshot := cached_snapshot()) is None:
            raise WeightsNotAvailableError(f"{HF_HUB}{repo} downloaded, but its config and weights are not in one "
                                           "snapshot folder of the hub cache; load that folder with load_clip(path)")
    clip = load_dir(snapshot, device, name=f"{HF_HUB}{repo}")
    clip.pretrained = f"{HF_HUB}{repo}"
    return clip


def resolve_tag(arch: str, tag: str, cfg: dict) -> Path:
    """The local file holding `arch`/`tag` weights: from a cache, or downloaded when online."""
    from open_clip.pretrained import download_pretrained

    if cfg.get("file"):
        return Path(cfg["file"])
    hub = cfg.get("hf_hub", "")
    candidates = []
    if hub:
        repo, filename = os.path.split(hub)
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME] if not filename else \
            [filename.rsplit(".", 1)[0] + ".safetensors", filename]
        for n in names:
            if (hit := _hub_cached(repo, n)) is not None:
                return hit
        candidates += [f"{repo}/{n}" for n in names]
    if cfg.get("url"):
        url_file = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if url_file.is_file():
            return url_file
        candidates.append(str(url_file))
    if _offline():
        raise _not_cached(arch, tag, candidates)
    try:
        return Path(download_pretrained(cfg))
    except Exception as e:
        raise _not_cached(arch, tag, candidates, e) from None


def weights_id(path: Path) -> str:
    """Identifies weights in cache keys: sha256 of the file (memoised by path, mtime and size)."""
    return "sha256:" + file_digest(path)


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (torch.jit.save; the original OpenAI CLIP .pt files): its entries
    include <root>/constants.pkl or <root>/code/... (the compiled Python). torch.save zips have neither."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    for name in names:
        parts = name.split("/")
        if (len(parts) <= 2 and parts[-1] == "constants.pkl") or (len(parts) >= 3 and parts[1] == "code"):
            return True
    return False


def check_safe_checkpoint(path: Path) -> None:
    """Refuse pickles that hold anything but tensors and plain containers (before open_clip loads it),
    and TorchScript archives (which hold code), each with what to do instead."""
    if path.suffix in (".safetensors", ".npz", ".npy"):  # no code in these formats (np.load: allow_pickle=False)
        return
    if is_torchscript_archive(path):
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a TorchScript archive (the original OpenAI CLIP .pt format, e.g. "
            "~/.cache/clip/ViT-B-32.pt), which holds code as well as weights, and clipspace only loads plain "
            "weights. Use open_clip's safetensors weights for that tag instead: move this file out of the way "
            "and, while online, load_clip('ViT-B-32', pretrained='openai') (or your architecture and tag) "
            "downloads them from the Hugging Face hub once. Or, if you trust the file, convert it yourself: "
            "sd = torch.jit.load(path, map_location='cpu').state_dict() (drop the entries input_resolution, "
            "context_length and vocab_size if present: they are not weights); "
            "safetensors.torch.save_file(sd, 'weights.safetensors'); then "
            "load_clip('<architecture>', pretrained='weights.safetensors')")
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a pickle holding more than tensors ({first}). clipspace only "
            "loads weights with safetensors or torch.load(weights_only=True); if you trust the file, "
            "convert it to .safetensors yourself") from None
    except Exception as e:
        raise ClipspaceError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


def _build(oc_name: str, pretrained: Path | None, device: torch.device, name: str, tag: str | None,
           wid: str, checkpoint: Path | None = None, **force) -> ClipModel:
    if checkpoint or pretrained:
        check_safe_checkpoint(Path(checkpoint or pretrained))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            oc_name, pretrained=str(pretrained) if pretrained else None, device=device,
            weights_only=True, **force)
    except ClipspaceError:
        raise
    except Exception as e:  # e.g. a checkpoint for another architecture: say which pair failed
        raise ClipspaceError(f"open_clip could not build {name!r} with weights {tag or 'none'}: "
                             f"{type(e).__name__}: {str(e)[:800]}") from e
    model.eval()
    return ClipModel(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(oc_name), name=name,
                     pretrained=tag, device=device, weights_id=wid)


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename)
    return Path(hit) if isinstance(hit, str) else None


def _not_cached(model: str, tag: str | None, looked_for: list[str], error: Exception | None = None):
    from huggingface_hub import constants

    what = f"{model} with pretrained={tag!r}" if tag else model
    why = (f"downloading failed ({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}; "
           "on a machine without network, set HF_HUB_OFFLINE=1 to fail at once)" if error else "offline (HF_HUB_OFFLINE=1) and the weights are not in the local caches")
    return WeightsNotAvailableError(
        f"Weights for {what} are not available: {why}. Looked for: {', '.join(looked_for) or 'nothing to look for'} "
        f"(hub cache: {constants.HF_HUB_CACHE}; set HF_HUB_CACHE or HF_HOME to use another). To make them "
        "available: download them once while online (HF_HUB_OFFLINE=1 then keeps every later load off the "
        "network), or copy them to this machine and pass the path: " +
        (f"load_clip({model!r}, pretrained='/path/to/weights.safetensors')." if tag else
         "load_clip('/path/to/folder') for a folder holding open_clip_config.json and the weights."))


# ---------------------------------------------------------------------------------------------
# The diffusion models' configs and weight folders (decoders, priors): one reader, one writer
# ---------------------------------------------------------------------------------------------
def read_model_config(name_or_path, kind: str) -> dict:
    """A `kind` ("decoder", "prior") config: a dict (deep-copied), a JSON file, or the name of one
    shipped in `model_configs/` (`<kind>-*.json`)."""
    import json

    if isinstance(name_or_path, dict):
        return json.loads(json.dumps(name_or_path))
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob(f"{kind}-*.json"))
        raise FileNotFoundError(f"no {kind} config {str(name_or_path)!r} (looked for {path}); shipped configs: {known}")
    return json.loads(path.read_text())


def write_model_dir(out, state: dict, config: dict, weights_file: str, config_file: str, fp16: bool = False,
                    keep_fp32: tuple = ()) -> Path:
    """Write a state dict (safetensors; fp16 if asked, except the `keep_fp32` keys) and its JSON config
    into `out`, each file atomically."""
    import json

    from safetensors.torch import save

    from clipspace.cache import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if fp16 and v.is_floating_point() and k not in keep_fp32 else v).detach().cpu().contiguous().clone()
             for k, v in state.items()}
    write_atomic(out / weights_file, save(state))
    write_atomic(out / config_file, json.dumps(config, indent=2) + "\n")
    return out
