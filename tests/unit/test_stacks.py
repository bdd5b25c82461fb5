"""`load_unclip`: the registry's pairings, the offline failures, and the load path on tiny components saved in
diffusers' layout (no network: HF_HUB_OFFLINE=1 and an empty HF_HOME wherever a load is tried)."""
import json
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipspace.errors import DecoderMismatchError, DecoderNotAvailableError, UnclipStackNotAvailableError, \
    UnknownModelError, WeightsNotAvailableError
from clipspace.factory import load_clip
from clipspace.unclip import stacks
from clipspace.unclip.decoder import decoder_for
from clipspace.unclip.latents import decode, invert, random_noise
from clipspace.unclip.stacks import STACKS, load_unclip, stacks_for, tiny_stack


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """No network and an empty Hugging Face home: nothing can be found but what a test puts there."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def shrunk_clip(folder: Path, arch: str, seed: int = 0):
    """A local open_clip folder named after `arch`, holding its embedding size and tokenizer with towers
    shrunk to one narrow layer at 28 px (random weights): a CLIP of that architecture as load_clip(folder)
    loads one, at a fraction of the cost."""
    cfg = open_clip.get_model_config(arch)
    cfg["vision_cfg"].update(image_size=28, layers=1, width=64, head_width=32)
    cfg["text_cfg"].update(width=64, heads=2, layers=1)
    d = folder / arch
    d.mkdir(parents=True)
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in open_clip.CLIP(**cfg).state_dict().items()}, d / "open_clip_model.safetensors")
    return load_clip(d)


@pytest.fixture(scope="module")
def vit_l(tmp_path_factory):
    return shrunk_clip(tmp_path_factory.mktemp("clips"), "ViT-L-14")


# --- the registry ---------------------------------------------------------------------------------
def test_the_registry_pairs_each_decoder_with_an_open_clip_model_of_its_size():
    want = {"kandinsky-2-2": ("ViT-bigG-14", "laion2b_s39b_b160k", 1280), "karlo": ("ViT-L-14", "openai", 768),
            "stable-unclip-h": ("ViT-H-14", "laion2b_s32b_b79k", 1024), "stable-unclip-l": ("ViT-L-14", "openai", 768),
            "sd-image-variations": ("ViT-L-14", "openai", 768)}
    assert set(want) <= set(STACKS)
    for name, (arch, tag, dim) in want.items():
        spec = STACKS[name]
        assert (spec.clip_arch, spec.clip_pretrained, spec.embed_dim) == (arch, tag, dim)
        assert open_clip.get_model_config(arch)["embed_dim"] == dim  # open_clip's own config agrees
        assert open_clip.get_pretrained_cfg(arch, tag), f"{arch} has no pretrained tag {tag!r} in open_clip"
        assert (spec.prior is None) == (spec.prior_repo is None)
        assert all([spec.resolution, spec.space, spec.licence, spec.vram])


@pytest.mark.parametrize("name", list(STACKS))
def test_each_adapter_knows_its_repo_and_clip(name):
    """The adapters' own tables (hub id -> CLIP architecture: a decoder module's HUB_MODELS, a prior class's
    hub_models()) agree with the registry."""
    spec = STACKS[name]
    decoders = stacks._adapter(spec.decoder)
    assert __import__(decoders.__module__, fromlist=["HUB_MODELS"]).HUB_MODELS.get(spec.decoder_repo) == spec.clip_arch
    if spec.prior is not None:
        assert stacks._adapter(spec.prior).hub_models().get(spec.prior_repo) == spec.clip_arch


def test_stacks_for_names_the_stacks_of_this_clip(tmp_path, vit_l, tiny_clip):
    assert stacks_for(vit_l) == ["karlo", "stable-unclip-l", "sd-image-variations"]
    assert stacks_for(replace(vit_l, pretrained="openai")) == stacks_for(vit_l)
    assert stacks_for(replace(vit_l, pretrained="laion2b_s32b_b82k")) == []  # same architecture, other weights
    assert stacks_for(replace(vit_l, pretrained="hf-hub:timm/vit_large_patch14_clip_224.openai")) == stacks_for(vit_l)
    assert stacks_for(replace(vit_l, name="ViT-L-14-336")) == []  # another model, though 768-d too
    assert stacks_for(shrunk_clip(tmp_path, "ViT-H-14")) == ["stable-unclip-h"]
    assert stacks_for(shrunk_clip(tmp_path, "ViT-bigG-14")) == ["kandinsky-2-2"]
    assert stacks_for(tiny_clip) == []


def test_an_unknown_stack_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="'karloo'.*close: karlo.*the stacks are kandinsky-2-2"):
        load_unclip("karloo")


# --- offline --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(STACKS))
def test_offline_without_weights_fails_at_once_naming_repos_and_where_it_looked(name, offline_home):
    spec = STACKS[name]
    with pytest.raises(UnclipStackNotAvailableError) as info:
        load_unclip(name)
    msg, err = str(info.value), info.value
    assert isinstance(err, DecoderNotAvailableError) and isinstance(err, WeightsNotAvailableError)
    assert spec.decoder_repo in msg and str(offline_home / "hub") in msg and "HF_HUB_OFFLINE" in msg
    assert str(offline_home / "hub" / ("models--" + spec.decoder_repo.replace("/", "--"))) in msg
    assert "decoder_dir=" in msg
    clip_repo = open_clip.get_pretrained_cfg(spec.clip_arch, spec.clip_pretrained)["hf_hub"].strip("/")
    assert clip_repo in msg
    parts = {m["part"]: m["repo"] for m in err.missing}
    assert parts["decoder"] == spec.decoder_repo and parts["clip"] == clip_repo
    assert parts.get("prior") == spec.prior_repo
    assert stacks.missing_weights(name) == err.missing


def test_a_folder_that_is_not_diffusers_layout_is_named(tmp_path, vit_l, offline_home):
    with pytest.raises(UnclipStackNotAvailableError, match=f"decoder folder.*looked in {tmp_path / 'empty'}"):
        load_unclip("sd-image-variations", clip=vit_l, decoder_dir=tmp_path / "empty")


def test_a_clip_of_the_wrong_size_names_both_and_the_right_one(tiny_clip, tmp_path):
    with pytest.raises(DecoderMismatchError,
                       match=r"768-d ViT-L-14 \(openai\).*'clipspace-tiny' \(pretrained=None, 128-d\).*"
                             r"clip=load_clip\('ViT-L-14', pretrained='openai'\)"):
        load_unclip("karlo", clip=tiny_clip)
    with pytest.raises(DecoderMismatchError, match=r"1280-d ViT-bigG-14.*load_clip\('ViT-bigG-14', "
                                                   r"pretrained='laion2b_s39b_b160k'\)"):
        load_unclip("kandinsky-2-2", clip=tiny_clip)


# --- loading local folders ------------------------------------------------------------------------
def test_a_local_diffusers_folder_loads_offline_and_equals_the_components(tmp_path, vit_l, offline_home):
    """sd-image-variations by its real name: a 768-d tiny pipeline saved to a folder, loaded through load_unclip
    with the ViT-L-14 CLIP given, predicts exactly as the in-memory components do."""
    from clipspace.unclip.image_variations import ImageVariationsDecoder, tiny_pipeline

    pipe = tiny_pipeline(embed_dim=768, seed=1)
    pipe.save_pretrained(tmp_path / "iv")
    stack = load_unclip("sd-image-variations", clip=vit_l, decoder_dir=tmp_path / "iv")
    assert stack.clip is vit_l and stack.prior is None and stack.decoder.clip_name == "ViT-L-14"
    assert stack.decoder.embedding_norm == pytest.approx(stacks.raw_embedding_norm(vit_l))  # measured on load
    ref = ImageVariationsDecoder(pipe, "ViT-L-14", embedding_norm=stack.decoder.embedding_norm)
    z, x_T = torch.nn.functional.normalize(torch.randn(2, 768), dim=-1), random_noise(ref, 2, seed=3)
    torch.testing.assert_close(decode(stack.decoder, z, x_T, steps=3, guidance=2.0, output="pt"),
                               decode(ref, z, x_T, steps=3, guidance=2.0, output="pt"))
    assert decoder_for(vit_l) == (stack.decoder, "")  # the notebooks' lookup finds the stack's decoder


def test_a_snapshot_in_the_hub_cache_loads_offline(tmp_path, vit_l, offline_home):
    """The repo's snapshot in HF_HOME's hub cache (the layout huggingface_hub writes) is found without the network."""
    from clipspace.unclip.stable_unclip import StableUnCLIPImg2ImgPipeline, StableUnclipDecoder, tiny_components

    repo = STACKS["stable-unclip-l"].decoder_repo
    folder = offline_home / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    pipe = StableUnCLIPImg2ImgPipeline(feature_extractor=None, image_encoder=None, **tiny_components(embed_dim=768))
    pipe.save_pretrained(folder / "snapshots" / ("0" * 40))
    assert stacks.missing_weights("stable-unclip-l", clip=vit_l) == []
    stack = load_unclip("stable-unclip-l", clip=vit_l)
    ref = StableUnclipDecoder(pipe, "ViT-L-14")
    x, z = torch.randn(1, *ref.latent_shape), torch.nn.functional.normalize(torch.randn(1, 768), dim=-1)
    torch.testing.assert_close(stack.decoder.predict(x, 400, z, guidance=2.0), ref.predict(x, 400, z, guidance=2.0))


@pytest.mark.parametrize("name", list(STACKS))
def test_tiny_stacks_run_the_load_path_and_the_bipartite_latent(name, tmp_path, build_random_clip):
    """Every family at toy size through tiny_stack (saved, loaded back by load_stack offline), then
    inversion and decoding: shapes and determinism (random weights: no PSNR)."""
    from clipspace import world

    clip = build_random_clip("clipspace-tiny", seed=5)
    stack = tiny_stack(name, clip=clip, folder=tmp_path)
    assert (tmp_path / "decoder" / "model_index.json").is_file()
    assert (stack.prior is None) == (STACKS[name].prior is None)
    dec = stack.decoder
    lat = invert(dec, clip, world.single_objects(1), steps=2)
    assert lat.x_T.shape == (1, *dec.latent_shape)
    a, b = (decode(dec, lat.z, lat.x_T, steps=2, output="pt") for _ in range(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.shape == (1, 3, dec.image_size, dec.image_size) and torch.isfinite(a).all()
    assert decoder_for(clip)[0] is dec
    from clipspace.unclip.prior import prior_for

    prior, why = prior_for(clip)  # the stack answers for its CLIP: its own prior, or a line saying it has none
    assert prior is stack.prior and (why == "") == (stack.prior is not None)
    # what came back from the folder predicts as the same components built in memory do
    ref = in_memory_decoder(name, clip, stack)
    x = torch.randn(2, *dec.latent_shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dec.predict(x, 300, lat.z.expand(2, -1), guidance=2.0),
                               ref.predict(x, 300, lat.z.expand(2, -1), guidance=2.0))
    if stack.prior is not None:  # the prior plugs in: unit-norm embeddings of this CLIP's size, seeded
        z1, z2 = (stack.prior.sample(["a red circle"], n=2, steps=3, seed=1) for _ in range(2))
        assert z1.shape == (2, clip.embed_dim) and torch.equal(z1, z2)
        torch.testing.assert_close(z1.norm(dim=-1), torch.ones(2))
        from clipspace import generate

        (image,) = generate(stack.prior, dec, clip, "a red circle", n=1, steps=2, prior_steps=2)
        assert image.size == (dec.image_size, dec.image_size)


def in_memory_decoder(name, clip, stack):
    """The family's decoder straight from its adapter's tiny components (seed 0, as tiny_stack builds them)."""
    family = STACKS[name].decoder.split(":")[0]
    d = clip.embed_dim
    if family == "stable_unclip":
        from clipspace.unclip.stable_unclip import StableUnCLIPImg2ImgPipeline, StableUnclipDecoder, tiny_components

        return StableUnclipDecoder(StableUnCLIPImg2ImgPipeline(feature_extractor=None, image_encoder=None,
                                                               **tiny_components(embed_dim=d)), clip.name)
    if family == "image_variations":
        from clipspace.unclip.image_variations import ImageVariationsDecoder, tiny_pipeline

        assert stack.decoder.embedding_norm == pytest.approx(stacks.raw_embedding_norm(clip))
        return ImageVariationsDecoder(tiny_pipeline(embed_dim=d), clip.name, embedding_norm=stack.decoder.embedding_norm)
    assert stack.decoder.embedding_norm == pytest.approx(stack.prior.embedding_norm)  # the prior's statistics
    if family == "kandinsky":
        from clipspace.unclip.kandinsky import KandinskyDecoder, tiny_components

        return KandinskyDecoder(**tiny_components(embed_dim=d), clip_name=clip.name, clip=clip,
                                embedding_norm=stack.prior.embedding_norm)
    from clipspace.unclip.karlo import KarloDecoder, tiny_components

    return KarloDecoder(**tiny_components(embed_dim=d), clip_name=clip.name, clip=clip,
                        embedding_norm=stack.prior.embedding_norm)


# --- decoder_for's line ---------------------------------------------------------------------------
def test_decoder_for_names_the_stacks_that_pair(vit_l, build_random_clip):
    other = fresh_copy(vit_l)
    decoder, why = decoder_for(other)
    assert decoder is None and "\n" not in why
    assert why.startswith("No decoder pairs with 'ViT-L-14' (768-d)")
    for name in ("karlo", "stable-unclip-l", "sd-image-variations"):
        assert f"load_unclip({name!r})" in why
    assert "kandinsky" not in why
    decoder, why = decoder_for(build_random_clip("ViT-S-32-alt", seed=1))
    assert decoder is None and "no pretrained stack pairs with it either" in why
    assert all(f"load_unclip({n!r})" in why for n in STACKS) and "ViT-bigG-14 laion2b_s39b_b160k, 1280-d" in why


def fresh_copy(clip):
    """The same CLIP as a new object: no stack has been loaded with it."""
    return replace(clip)


# --- the GPU script -------------------------------------------------------------------------------
def test_the_benchmark_without_weights_lists_what_is_missing_and_exits_0(tmp_path, offline_home, capsys):
    from benchmarks.stacks import main

    assert main(["--device", "cpu", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["results"] == [] and report["failed"] == {} and set(report["missing"]) == set(STACKS)
    for name, parts in report["missing"].items():
        repos = {m["repo"] for m in parts}
        assert STACKS[name].decoder_repo in repos and all(str(offline_home) in m["looked_in"] for m in parts)
    out = capsys.readouterr().out
    assert all(f"- {n}: not measured, weights missing" in out for n in STACKS)


def test_the_benchmark_runs_its_measurement_on_a_tiny_stack(tmp_path, offline_home, capsys):
    from benchmarks.stacks import main

    rc = main(["--device", "cpu", "--tiny", "--stacks", "sd-image-variations", "--photos", "chelsea", "--steps", "2",
               "--out", str(tmp_path / "t.json")])
    assert rc == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["results"]
    assert row["stack"] == "sd-image-variations" and len(row["rows"]) == 1
    assert -1 <= row["reencoded_cosine"] <= 1 and row["psnr_db"] > 0 and row["autoencoder_psnr_db"] > 0
    assert "| sd-image-variations |" in capsys.readouterr().out


def test_the_docs_table_is_the_registry():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pretrained-stacks.md").read_text()
    assert stacks.pairing_table() in doc


def test_the_stack_is_remembered_weakly(tmp_path, vit_l):
    """decoder_for finds the decoder while the stack is kept, and says how to keep it once it is freed."""
    import gc

    clip = fresh_copy(vit_l)
    stack = tiny_stack("sd-image-variations", clip=clip, folder=tmp_path)
    assert decoder_for(clip)[0] is stack.decoder
    del stack
    gc.collect()
    decoder, why = decoder_for(clip)
    assert decoder is None and "'sd-image-variations' loaded with this CLIP was freed" in why
