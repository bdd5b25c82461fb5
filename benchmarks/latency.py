"""Interactive latency: what each notebook's main widget callback costs, called the way a widget
calls it (a new value every time), against the budgets: 100 ms for embedding-only controls, 1 s for
a decoder frame. Each row times the library functions the callback calls, with what a notebook
computes once at start-up (image embeddings, a fitted PCA or map, a fitted classifier, the inverted
latents) done outside the timer. Plotly's trip to the browser is not included (no front end here):
the map rows time the in-place FigureWidget update up to the message sent.
"""
from __future__ import annotations

import importlib
import traceback

import numpy as np

from clipspace.notebook.widgets import callback_threads, torch_threads

from . import subjects
from .harness import goal_check, latency, summarize

EMBED_BUDGET_S, FRAME_BUDGET_S = 0.100, 1.0
# the text-query row again with torch's own thread count, as callbacks ran before guarded set it
BEFORE_THREADS = "map: recolour by text query (before fix: torch's default threads)"


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _have(module: str, *names: str) -> bool:
    try:
        m = importlib.import_module(f"clipspace.{module}")
    except ImportError:
        return False
    return all(hasattr(m, n) for n in names)


# ---------------------------------------------------------------------------------------------
# The controls: each returns (setup note, callback(i)) or raises
# ---------------------------------------------------------------------------------------------
def zero_shot_classes(clip, n_images: int = 48):
    from clipspace import world

    if _have("probes.zero_shot", "world_zero_shot", "confusion_figure", "parse_classnames"):
        # notebook 01's `update`: parse the typed classes, world_zero_shot on the precomputed scene
        # embeddings, a new confusion figure (the FigureWidget update itself is plotly's)
        from clipspace.probes.zero_shot import confusion_figure, embed_images, parse_classnames, world_zero_shot

        scenes = world.single_objects(n_images)
        emb = embed_images(clip, scenes)
        shapes = list(world.SHAPES)

        def callback(i):  # the user edits the class list: one shape left out, a different one each time
            names = parse_classnames(", ".join(shapes[:i % len(shapes)] + shapes[i % len(shapes) + 1:]))
            probe = world_zero_shot(clip, scenes, names, "world", embeddings=emb)
            return confusion_figure(probe.scored).to_dict() if probe.scored is not None else probe

        return (f"notebook 01 `update`: world_zero_shot on {n_images} precomputed scene embeddings (world templates) "
                "+ confusion_figure"), callback

    from clipspace.probes.zero_shot import WORLD_TEMPLATES, zero_shot

    emb = clip.encode_images([s.render(clip.image_size) for s in world.single_objects(n_images)], cache=False, progress=False)
    extra = [w for w in world.WORDS if w not in world.SHAPES]

    def callback(i):  # the user edits the class list: one class more, a different one each time
        return zero_shot(clip, emb, list(world.SHAPES) + [extra[i % len(extra)]], WORLD_TEMPLATES["shape"])

    return f"{n_images} precomputed image embeddings, 7 classes x {len(WORLD_TEMPLATES['shape'])} world templates", callback


def zero_shot_classes_openai(clip, n_images: int = 8):
    from clipspace.probes.zero_shot import SIMPLE_TEMPLATES, zero_shot

    emb = _unit(n_images, clip.embed_dim)
    base = ["cat", "dog", "car", "apple", "rocket", "coffee"]
    words = ["ipod", "pizza", "library", "astronaut", "coins", "galaxy", "camera", "motorcycle"]

    def callback(i):
        return zero_shot(clip, emb, base + [words[i % len(words)]], SIMPLE_TEMPLATES)

    return f"7 classes x {len(SIMPLE_TEMPLATES)} templates (open_clip's simple ImageNet set)", callback


def typographic_text(clip):
    from clipspace import world
    from clipspace.probes.typographic import write_text
    from clipspace.probes.zero_shot import WORLD_TEMPLATES, ZeroShotClassifier

    zsc = ZeroShotClassifier.from_clip(clip, list(world.SHAPES), WORLD_TEMPLATES["shape"])
    image = world.single_objects(1)[0].render(224)
    words = list(world.WORDS)

    def callback(i):  # the user types a new word: write it, embed the attacked image, classify
        attacked = write_text(image, words[i % len(words)], colour="black", box="white")
        return zsc.classify(clip.encode_images([attacked]))

    return "a 224 px world scene; classifier built once (6 shapes)", callback


def pca_k(clip, n: int = 1000):
    from clipspace.maps.pca import EmbeddingPCA

    X = _unit(n, clip.embed_dim)
    pca = EmbeddingPCA(renormalize=True).fit(X)
    ks = list(range(1, pca.n_components_ + 1))

    def callback(i):  # the k slider: reconstruct every embedding from its first k components
        rec = pca.reconstruct(X, ks[(7 * i) % len(ks)])
        return np.einsum("nd,nd->n", rec, X)

    return f"EmbeddingPCA fitted once on {n} embeddings; reconstruct all {n} at the new k", callback


def binding_kind(clip, n_per_kind: int = 50):
    from clipspace.probes.binding import KINDS, binding_pairs, binding_probe

    cached = {}
    for kind in KINDS:  # the notebook embeds each kind's images once
        rows = binding_pairs(n_per_kind, [kind])
        emb = clip.encode_images([r[0].render(clip.image_size) for r in rows], cache=False, progress=False)
        cached[kind] = (emb, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])

    def callback(i):  # the swap-kind dropdown: score the kind's images against its caption pairs
        emb, true, swapped, kinds = cached[KINDS[i % len(KINDS)]]
        return binding_probe(clip, emb, true, swapped, kinds).summary()

    return f"{n_per_kind} pairs per kind, image embeddings precomputed per kind; {2 * n_per_kind} captions embedded", callback


def binding_kind_from_scratch(clip, n_per_kind: int = 50):
    from clipspace.probes.binding import KINDS, world_binding

    def callback(i):  # the naive callback: render and embed the kind's images on every change
        return world_binding(clip, n_per_kind, [KINDS[i % len(KINDS)]]).summary()

    return f"world_binding(clip, {n_per_kind}, [kind]): renders and embeds the images on every change", callback


def _map(clip, n: int):
    from clipspace import world
    from clipspace.maps.embedding_map import EmbeddingMap, scene_table

    scenes = world.mixed_scenes(n)
    return EmbeddingMap.build(_unit(n, clip.embed_dim), table=scene_table(scenes), projection="pca", clip=clip)


def map_color_by(clip, n: int = 1000):
    emap = _map(clip, n)
    columns = ["shape", "colour", "kind", "background", "count", "size"]

    def callback(i):
        return emap.color_by(columns[i % len(columns)])

    return f"EmbeddingMap of {n} points (PCA, fitted once); color_by a new column", callback


def map_color_by_query(clip, n: int = 1000):
    from clipspace import world

    emap = _map(clip, n)
    queries = [f"a {c} {s}" for s in world.SHAPES for c in world.COLOURS]

    def callback(i):
        return emap.color_by_query(queries[i % len(queries)])

    return f"EmbeddingMap of {n} points; color_by_query a new text (one text embedded)", callback


NOTEBOOK_STEPS = 25  # notebook 06's STEPS: DDIM steps for inversion and decoding


def _latents(decoder, clip, steps, n: int = 2):
    from clipspace import world
    from clipspace.unclip.latents import invert

    images = [s.render(decoder.image_size) for s in world.single_objects(max(n, 6))[:n]]
    return invert(decoder, clip, images, steps=steps)


def unclip_frame(decoder, clip, steps: int = NOTEBOOK_STEPS):
    from clipspace.unclip.latents import decode

    lat = _latents(decoder, clip, steps, 1)
    etas = np.linspace(0.1, 1.0, 10)

    def callback(i):  # one decoded frame at a new eta (what every decoder control costs per frame)
        return decode(decoder, lat.z[:1], lat.x_T[:1], eta=float(etas[i % len(etas)]), steps=steps, seed=i)

    return f"decode(): one frame, {steps} DDIM steps, latents inverted once", callback


def unclip_eta(decoder, clip, steps: int = NOTEBOOK_STEPS):
    from clipspace.unclip.views import variation_view

    lat = _latents(decoder, clip, steps, 1)
    etas = np.linspace(0.0, 1.0, 5)

    def callback(i):  # notebook 06 `on_variation`: 4 variations at the new eta, plus the eta-0 reference
        return variation_view(decoder, lat, float(etas[i % len(etas)]), n=4, steps=steps, seed=i)

    return f"notebook 06 `on_variation`: variation_view(n=4), {steps} steps (5 frames decoded)", callback


def unclip_t(decoder, clip, steps: int = NOTEBOOK_STEPS, reinvert: bool = True):
    from clipspace import world
    from clipspace.unclip.views import interpolation_view, reconstruction

    lat = _latents(decoder, clip, steps, 1)
    target_image = world.single_objects(6)[5].render(decoder.image_size)
    target = reconstruction(decoder, clip, target_image, steps=steps)[0]
    ts = np.linspace(0.05, 0.95, 19)

    def callback(i):  # notebook 06 `on_interpolation`: the trajectory and the frame at the new t
        b = reconstruction(decoder, clip, target_image, steps=steps)[0] if reinvert else target
        return interpolation_view(decoder, lat, b, float(ts[i % len(ts)]), n=5, steps=steps)

    what = ("reconstruction() re-inverts and re-decodes the target on every change (as before 524ac28)"
            if reinvert else "the target's latents kept from the first call (as the notebook does since 524ac28)")
    return f"notebook 06 `on_interpolation`, {steps} steps, 6 frames; {what}", callback


def unclip_theta(decoder, clip, steps: int = NOTEBOOK_STEPS):
    from clipspace.unclip.views import text_diff_view

    lat = _latents(decoder, clip, steps, 1)
    thetas = np.linspace(0.1, 1.0, 10)

    def callback(i):  # notebook 06 `on_text_diff`: 5 frames from theta 0 to the new theta
        return text_diff_view(decoder, clip, lat, "a blue star", "a red star", float(thetas[i % len(thetas)]),
                              n=5, steps=steps)

    return f"notebook 06 `on_text_diff`: text_diff_view(n=5), {steps} steps, direction embedded each call", callback


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False) -> dict:
    clip, clip_note = subjects.offline_clip()
    notes = [f"model: {clip_note}", "p50/p95 over a new widget value per call, after 2 untimed calls; budget: "
             f"{EMBED_BUDGET_S * 1e3:.0f} ms for embedding-only controls, {FRAME_BUDGET_S:.0f} s for a decoder frame "
             "(goal: p95 within it; a decoder view showing n frames is held to n x 1 s, its per-frame p95).",
             f"callbacks run with {callback_threads()} torch thread(s), as clipspace.notebook.widgets.guarded runs them "
             "(every core but one, left to the front end)"]
    n_fast, n_slow = (5, 3) if quick else (30, 10)
    controls = [  # (notebook control, module, names needed, factory, budget, model)
        ("zero-shot: class list", "probes.zero_shot", ("zero_shot",), lambda: zero_shot_classes(clip), EMBED_BUDGET_S, "offline"),
        ("typographic: written word", "probes.typographic", ("write_text",), lambda: typographic_text(clip), EMBED_BUDGET_S, "offline"),
        ("PCA: k", "maps.pca", ("EmbeddingPCA",), lambda: pca_k(clip), EMBED_BUDGET_S, "offline"),
        ("binding: swap kind", "probes.binding", ("binding_probe",), lambda: binding_kind(clip), EMBED_BUDGET_S, "offline"),
        ("binding: swap kind, images re-embedded", "probes.binding", ("world_binding",),
         lambda: binding_kind_from_scratch(clip), EMBED_BUDGET_S, "offline"),
        ("map: recolour by column", "maps.embedding_map", ("EmbeddingMap",), lambda: map_color_by(clip), EMBED_BUDGET_S, "offline"),
        ("map: recolour by text query", "maps.embedding_map", ("EmbeddingMap",), lambda: map_color_by_query(clip), EMBED_BUDGET_S, "offline"),
        (BEFORE_THREADS, "maps.embedding_map", ("EmbeddingMap",), lambda: map_color_by_query(clip), None, "offline"),
    ]
    decoder_note = None
    decoder_controls = [  # (control, module, names, factory)
        ("unCLIP: one frame (decode)", "unclip", ("decode", "invert"), lambda: unclip_frame(decoder, clip)),
        ("unCLIP: eta", "unclip.views", ("variation_view",), lambda: unclip_eta(decoder, clip)),
        ("unCLIP: interpolation t", "unclip.views", ("interpolation_view", "reconstruction"),
         lambda: unclip_t(decoder, clip)),
        ("unCLIP: interpolation t, target kept", "unclip.views", ("interpolation_view", "reconstruction"),
         lambda: unclip_t(decoder, clip, reinvert=False)),
        ("unCLIP: text-diff theta", "unclip.views", ("text_diff_view",), lambda: unclip_theta(decoder, clip)),
    ]
    if _have("unclip.decoder", "build_decoder") and _have("unclip", "decode", "invert"):
        decoder, decoder_note = subjects.offline_decoder(clip)
        notes.append(f"decoder: {decoder_note}")
        controls += [(name, module, needed, factory, FRAME_BUDGET_S, "decoder")
                     for name, module, needed, factory in decoder_controls]
    else:
        controls += [(name, module, ("__missing__",), None, FRAME_BUDGET_S, "decoder")
                     for name, module, needed, factory in decoder_controls]
    if not quick:  # a real-sized CLIP on this CPU, for scale (not a goal: the notebooks default to the tiny one)
        vit, vit_note = subjects.arch_clip()
        notes.append(f"the last row: {vit_note}; shown for scale, not held to the budget")
        controls.append(("zero-shot: class list (ViT-B-32)", "probes.zero_shot", ("zero_shot",),
                         lambda: zero_shot_classes_openai(vit), None, "ViT-B-32"))
    rows, goals, data = [], [], {}
    for name, module, needed, factory, budget, model in controls:
        row = {"control": name, "model": model, "budget_ms": budget * 1e3 if budget else None}
        if factory is None or not _have(module, *needed):
            row.update(status="not available yet", setup=f"clipspace.{module} is not there yet")
            rows.append(row)
            continue
        try:
            setup, callback = factory()
            n = n_slow if budget == FRAME_BUDGET_S or model == "ViT-B-32" else n_fast
            frames = 1
            if model == "decoder":  # a view decodes several frames: the budget is per frame
                shown = callback(0)
                frames = len(shown.images) if hasattr(shown, "images") else len(shown)
            threads = None if name == BEFORE_THREADS else callback_threads()
            with torch_threads(threads):  # as the notebooks' guarded callbacks run
                samples = latency(callback, n=n, warmup=1 if model == "decoder" else 2)
        except Exception as e:  # one broken control must not sink the others
            row.update(status="error", setup=f"{type(e).__name__}: {e}"[:300])
            data[name] = {"error": traceback.format_exc()[-2000:]}
            rows.append(row)
            continue
        s = summarize(samples)
        row.update(status="ok", setup=setup, n=s["n"], p50_ms=s["median"] * 1e3, p95_ms=s["p95"] * 1e3,
                   max_ms=s["max"] * 1e3, frames=frames, p95_frame_ms=s["p95"] / frames * 1e3)
        if budget:
            row["met"] = goal_check(s["p95"] / frames, budget, higher_is_better=False)
            goals.append({"figure": f"{name} p95" + (f" per frame ({frames} frames a call)" if frames > 1 else ""),
                          "goal": f"≤ {budget * 1e3:.0f} ms", "value": s["p95"] / frames * 1e3,
                          "met": row["met"], "why": ""})
        rows.append(row)
        data[name] = {"seconds": samples}
    return {"title": "Interactive latency (widget callbacks)", "status": "ok", "notes": notes, "goals": goals,
            "tables": [{"caption": "", "columns": [["control", "control"], ["model", "model"], ["status", "status"],
                                                   ["p50_ms", "p50 ms"], ["p95_ms", "p95 ms"], ["max_ms", "max ms"],
                                                   ["frames", "frames"], ["p95_frame_ms", "p95 per frame ms"],
                                                   ["budget_ms", "budget ms"], ["met", "p95 (per frame) in budget"],
                                                   ["n", "calls"], ["setup", "what is timed"]], "rows": rows}],
            "data": data}
