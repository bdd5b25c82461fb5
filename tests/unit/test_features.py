"""Dictionary features: the SAE, naming, scoring, SpLiCE and steering, against independent references."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import nnls
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.linear_model import Lasso
from sklearn.metrics import roc_auc_score

from clipspace.errors import InvalidArgumentError
from clipspace.features import naming, scoring
from clipspace.features.atlas import fit_atlas
from clipspace.features.sae import SparseAutoencoder
from clipspace.features.splice import Splice, concept_precision_recall, nonnegative_lasso, weighted_jaccard
from clipspace.features.steering import feature_embedding, steered, steering_scores
from clipspace.probes.factors import FactorProbes, factor_labels, factor_scenes


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny matmuls: a second thread only adds overhead
    yield
    torch.set_num_threads(old)


def planted(m=24, d=16, n=2000, k=3, seed=0):
    """Data made of k of m unit atoms with positive codes: a dictionary the SAE should find."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(m, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for i in range(n):
        codes[i, rng.choice(m, k, replace=False)] = rng.uniform(0.5, 1.5, k)
    return codes @ D, D


def recovery(found, atoms):
    """For each planted atom, the best cosine among the found directions."""
    f = found / np.linalg.norm(found, axis=1, keepdims=True)
    return (f @ atoms.T).max(0)


@pytest.fixture(scope="module")
def planted_sae():
    X, D = planted()
    return SparseAutoencoder(n_features=48, k=3, steps=800, seed=0).fit(X), X, D


def test_sae_recovers_a_planted_dictionary_as_well_as_sklearn(planted_sae):
    sae, X, D = planted_sae
    ours = recovery(sae.components_, D)
    assert ours.min() > 0.9, np.sort(ours)[:5]
    ref = MiniBatchDictionaryLearning(n_components=24, alpha=0.1, positive_code=True, fit_algorithm="cd", transform_algorithm="lasso_cd", random_state=0,
                                      max_iter=30).fit(X)
    theirs = recovery(ref.components_, D)
    assert ours.mean() >= theirs.mean() - 0.02, (ours.mean(), theirs.mean())


def test_sae_rows_are_unit_norm_and_codes_k_sparse(planted_sae):
    sae, X, _ = planted_sae
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1, atol=1e-5)
    A = sae.transform(X[:100])
    assert (A >= 0).all() and ((A > 0).sum(1) <= 3).all()
    assert sae.explained_variance(X) > 0.9
    assert sae.loss_curve_[-1] < sae.loss_curve_[0] / 5
    # the pre-activations are what TopK keeps the largest of
    pre = sae.decision_function(X[:5])
    kept = A[:5] > 0
    assert np.all(pre[kept].reshape(5, -1).min(1) >= np.sort(pre, 1)[:, -3] - 1e-5)


def test_sae_is_seeded():
    X, _ = planted(n=300)
    a = SparseAutoencoder(n_features=16, k=2, steps=50, seed=3).fit(X).components_
    b = SparseAutoencoder(n_features=16, k=2, steps=50, seed=3).fit(X).components_
    c = SparseAutoencoder(n_features=16, k=2, steps=50, seed=4).fit(X).components_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kw, data, match", [
    ({"k": 9, "n_features": 8}, None, "k=9"), ({"steps": 0}, None, "steps"), ({}, "nan", "NaN"), ({}, "empty", "non-empty")])
def test_sae_bad_arguments(kw, data, match):
    X = np.ones((10, 4), np.float32)
    X = {"nan": np.full((3, 4), np.nan), "empty": np.zeros((0, 4))}.get(data, X)
    with pytest.raises(InvalidArgumentError, match=match):
        SparseAutoencoder(**kw).fit(X)
    with pytest.raises(InvalidArgumentError, match="not fitted"):
        SparseAutoencoder().transform(np.ones((2, 4)))


def test_auroc_matrix_equals_sklearn():
    rng = np.random.default_rng(0)
    A = rng.integers(0, 4, size=(80, 5)).astype(float)  # many ties
    Y = pd.DataFrame(rng.random((80, 3)) > 0.6, columns=list("abc"))
    got = scoring.auroc_matrix(A, Y)
    for f in range(5):
        for c in range(3):
            assert got[f, c] == pytest.approx(roc_auc_score(Y.iloc[:, c], A[:, f]))
    Y["never"] = False
    assert np.isnan(scoring.auroc_matrix(A, Y)[:, 3]).all()


def test_concepts_scores_and_coverage_on_known_features():
    labels = pd.DataFrame({"colour": ["red", "red", "blue", None], "count": [1, 2, 2, 3]})
    C = scoring.concept_matrix(labels)
    assert list(C.columns) == ["colour=blue", "colour=red", "count=1", "count=2", "count=3"]
    assert C["colour=red"].tolist() == [True, True, False, False]
    # feature 0 fires exactly on red; feature 1 on count 2 and on one red scene; feature 2 never
    A = np.array([[1, 0.5, 0], [2, 1, 0], [0, 1, 0], [0, 0, 0]], float)
    s = scoring.feature_scores(A, C)
    assert s.loc[0, "best_concept"] == "colour=red" and s.loc[0, "auroc"] == 1 and s.loc[0, "purity"] == 1
    assert s.loc[1, "best_concept"] == "count=2" and s.loc[1, "purity"] == pytest.approx(2 / 3)
    assert s.loc[2, "fire_rate"] == 0 and pd.isna(s.loc[2, "best_concept"])
    cov = scoring.coverage(A, C)
    assert cov.set_index("concept")["covered"].to_dict() == {
        "colour=blue": False, "colour=red": True, "count=1": False, "count=2": True, "count=3": False}


def gap_world(rng, m=6, d=32):
    """Text embeddings that share one big offset (a modality gap) plus a distinct part each."""
    parts = rng.normal(size=(m, d))
    offset = rng.normal(size=d) * 4
    vocab = pd.DataFrame({"factor": "f", "value": [f"v{i}" for i in range(m)], "text": [f"t{i}" for i in range(m)]})
    return vocab, parts + offset, parts


def test_naming_with_the_gap_correction_finds_planted_directions(rng):
    vocab, T, parts = gap_world(rng)
    # an image-side direction: the distinct part, plus a share of the gap (it points out of the image cone)
    offset = (T - parts)[0]
    directions = parts - parts.mean(0) + offset / np.linalg.norm(offset) * 4
    fixed = naming.name_directions(directions, T, vocab, centre=True)
    assert fixed["value"].tolist() == list(vocab["value"])
    raw = naming.name_directions(directions, T, vocab, centre=False)
    # raw cosines are dominated by the shared offset: names hang on thin margins
    assert fixed["margin"].mean() > 3 * raw["margin"].mean()
    with pytest.raises(InvalidArgumentError, match="vocabulary rows"):
        naming.name_directions(directions, T[:3], vocab)


def test_world_vocabulary_values_match_factor_labels():
    vocab = naming.world_vocabulary()
    labels = factor_labels(factor_scenes(60))
    C = scoring.concept_matrix(labels)
    keys = set(vocab["factor"] + "=" + vocab["value"])
    assert set(C.columns) <= keys  # every concept that occurs can be named
    with pytest.raises(InvalidArgumentError, match="texture"):
        naming.world_vocabulary(("texture",))


# --- SpLiCE ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def splice_problem():
    rng = np.random.default_rng(1)
    T = rng.normal(size=(12, 20))
    I = rng.normal(size=(40, 20)) + 0.5 * T[:3].sum(0)
    return Splice().fit(I, T, [f"c{i}" for i in range(12)]), I


@pytest.mark.parametrize("lam", [0.05, 0.3, 1.0])
def test_splice_equals_sklearn_lasso_and_meets_kkt(splice_problem, lam):
    sp, I = splice_problem
    d = sp.decompose(I[:6], lam)
    D, Zc = sp.dictionary_, sp.centre_images(I[:6])
    for i in range(6):
        ref = Lasso(alpha=lam / (2 * D.shape[1]), positive=True, fit_intercept=False, tol=1e-12,
                    max_iter=100_000).fit(D.T, Zc[i])
        np.testing.assert_allclose(d.weights[i], ref.coef_, atol=1e-6)
        grad = 2 * D @ (Zc[i] - D.T @ d.weights[i])  # 2 d_j^T r
        on = d.weights[i] > 0
        np.testing.assert_allclose(grad[on], lam, atol=1e-6)
        assert (grad[~on] <= lam + 1e-6).all()
    assert (d.weights >= 0).all()


def test_splice_at_zero_is_nnls_and_path_is_warm_started(splice_problem):
    sp, I = splice_problem
    Zc = sp.centre_images(I[:4])
    W = nonnegative_lasso(sp.dictionary_, Zc, 0.0)
    for i in range(4):
        np.testing.assert_allclose(W[i], nnls(sp.dictionary_.T, Zc[i])[0], atol=1e-6)
    path = sp.path(I[:4], [0.5, 0.2, 0.1])
    np.testing.assert_allclose(path[-1].weights, sp.decompose(I[:4], 0.1).weights, atol=1e-7)
    assert path[0].n_concepts.mean() <= path[-1].n_concepts.mean()  # more sparsity weight, fewer concepts


def test_splice_errors_name_the_argument(splice_problem):
    sp, I = splice_problem
    with pytest.raises(InvalidArgumentError, match="lam"):
        sp.decompose(I[:1], -1)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        sp.decompose(np.full((1, 20), np.nan))
    with pytest.raises(InvalidArgumentError, match="not fitted"):
        Splice().decompose(I[:1])


def test_precision_recall_and_overlap():
    w = np.array([[0.5, 0, 0.2], [0, 0, 0]])
    truth = np.array([[True, True, False], [False, True, False]])
    p, r = concept_precision_recall(w, truth)
    assert p[0] == 0.5 and r[0] == 0.5 and np.isnan(p[1]) and r[1] == 0
    assert weighted_jaccard(np.array([1.0, 1, 0]), np.array([1.0, 0, 1])) == pytest.approx(1 / 3)
    assert weighted_jaccard(w[0], w[0]) == 1


# --- steering, probes and the atlas on a real (random-weight) CLIP ------------------------------------
def test_steered_embeddings(rng):
    z = rng.normal(size=(3, 8))
    d = rng.normal(size=8)
    out = steered(z, d, [0.0, 1.0]).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(out[:3], z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-6)
    assert ((out[3:] @ d) > (out[:3] @ d)).all()  # moved toward the direction
    with pytest.raises(InvalidArgumentError):
        steered(z, d, [])


def test_atlas_and_steering_path(tiny_clip):
    from clipspace.unclip.decoder import build_decoder
    from tests.conftest import tiny_decoder_config

    atlas = fit_atlas(tiny_clip, n=90, n_features=16, k=2, steps=60)
    assert len(atlas.scores) == 16 and {"auroc", "purity", "name", "raw_name"} <= set(atlas.scores)
    s = atlas.summary()
    assert 0 <= s["coverage"] <= 1 and s["live_features"] == (atlas.scores["fire_rate"] > 0).sum()
    ranked = atlas.ranked()
    assert ranked["auroc"].is_monotonic_decreasing
    top = atlas.top_images(int(ranked.iloc[0]["feature"]), k=3)
    assert top and (atlas.activations[top, int(ranked.iloc[0]["feature"])] > 0).all()

    labels = factor_labels(atlas.images)
    probes = FactorProbes(("colour", "shape")).fit(atlas.embeddings, labels)
    cfg = tiny_decoder_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim)
    decoder = build_decoder(cfg, seed=0)
    z0 = feature_embedding(atlas.sae, 0)
    assert z0.shape == (1, tiny_clip.embed_dim)
    table = steering_scores(decoder, tiny_clip, probes, atlas.embeddings[:2], atlas.sae.components_[0],
                            "colour=red", alphas=(0.0, 1.0), steps=2)
    assert table["alpha"].tolist() == [0.0, 1.0] and table.loc[0, "leak"] == 0
    assert table["target_rate"].between(0, 1).all()
    with pytest.raises(InvalidArgumentError, match="factor=value"):
        steering_scores(decoder, tiny_clip, probes, atlas.embeddings[:1], atlas.sae.components_[0], "red")


def test_atlas_on_a_users_folder_skips_a_bad_file(tiny_clip, tmp_path):
    from clipspace import world
    from clipspace.notebook.feature_panel import FeaturePanel

    for i, s in enumerate(world.single_objects(12)):
        s.render(64).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    atlas = fit_atlas(tiny_clip, images=tmp_path, n_features=8, k=2, steps=20,
                      vocabulary=naming.world_vocabulary(("colour",)))
    assert len(atlas.images) == 12 and [p.name for p, _ in atlas.skipped] == ["broken.png"]
    assert atlas.coverage is None and "auroc" not in atlas.scores  # no truth: named, not scored
    panel = FeaturePanel(tiny_clip, None, atlas)
    assert panel.grid_image.value and "unscored" in panel.summary_html.value and not panel.output.outputs
