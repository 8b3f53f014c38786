"""fastnet.MLPClassifier: scikit-learn's own estimator checks, its tools (clone, pickle, Pipeline, searches with two
jobs), the bridge to parameters files, and accuracy beside scikit-learn's MLPClassifier on the same data."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as ScikitLearnMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastnet
from fastnet import MLPClassifier
from fastnet.errors import FastnetError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([MLPClassifier()])
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check of scikit-learn's own suite, none expected to fail (conftest.py sets SCIPY_ARRAY_API so that
    the array-API check runs rather than skips)."""
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_clone_and_pickle(iris, tmp_path):
    """clone copies the parameters, not the fit; a pickled model predicts the same, and in a new process with the
    kernels loaded from Numba's cache, not compiled again."""
    X, y = iris
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, y)
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "coefs_")
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "X.npy", X)
    code = ("import pickle, sys, numpy as np\n"
            "from fastnet.kernels.predict import _predict_rows\n"
            "model = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "np.save(sys.argv[2], model.predict_proba(np.load(sys.argv[3])))\n"
            "print(sum(_predict_rows.stats.cache_hits.values()), sum(_predict_rows.stats.cache_misses.values()))\n")
    files = [tmp_path / name for name in ("model.pkl", "p.npy", "X.npy")]
    result = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=300,
                            env=fastnet._child_environment())
    assert result.returncode == 0, result.stderr
    hits, misses = map(int, result.stdout.split())
    assert hits >= 1 and misses == 0, result.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model.predict_proba(X))


@pytest.fixture
def joblib_workers():
    """joblib's worker processes, shut down afterwards: it keeps them for reuse, and other tests count children."""
    from joblib.externals.loky import get_reusable_executor

    yield
    get_reusable_executor().shutdown(wait=True)


def test_pipeline_cross_validation_and_grid_search_with_two_jobs(joblib_workers):
    X, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.mean() > 0.93, scores
    search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(8,), (32,)],
                                     "mlpclassifier__solver": ["adam", "sgd"]}, cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.93 and len(search.cv_results_["params"]) == 4
    assert search.score(X, y) > 0.95


def test_labels_of_any_kind_come_back_as_given(iris):
    X, y = iris
    for labels in (np.array(["setosa", "versicolor", "virginica"])[y], y + 3, y == 2, y.astype(np.float32)):
        model = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0).fit(X, labels)
        np.testing.assert_array_equal(model.classes_, np.unique(labels))
        predicted = model.predict(X)
        assert predicted.dtype == labels.dtype and np.mean(predicted == labels) > 0.9
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier().fit(X, np.zeros(len(X)))


def test_partial_fit_continues_and_early_stopping_keeps_the_best(iris):
    X, y = iris
    model = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        model.partial_fit(X, y)
    for _ in range(30):
        model.partial_fit(X[:100], y[:100], classes=[0, 1, 2])  # class 2 is not among the first 100
    assert model.n_iter_ == 30 and model.t_ == 3000 and len(model.loss_curve_) == 30
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(X[:, :3], y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        model.partial_fit(X, np.full(len(X), 7))
    early = MLPClassifier(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                          max_iter=500, learning_rate_init=0.01, random_state=0).fit(X, y)
    assert early.n_iter_ < 500 and len(early.validation_scores_) == early.n_iter_
    assert early.best_validation_score_ == max(early.validation_scores_) and early.best_loss_ is None
    plain = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0).fit(X, y)
    assert plain.validation_scores_ is None and plain.best_loss_ == min(plain.loss_curve_)


def test_warm_start_continues_and_sgd_schedules_change_the_rate(iris):
    X, y = iris
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    first = [w.copy() for w in model.coefs_]
    model.fit(X, y)
    assert model.n_iter_ == 10 and not np.array_equal(first[0], model.coefs_[0])
    cold = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], first[0])
    kept = model.coefs_[0].copy()
    model.set_params(hidden_layer_sizes=(7, 7))  # other hidden layers: the fitted network went on, silently
    for call in (model.fit, model.partial_fit):
        with pytest.raises(ValueError, match=r"continues the fitted 4-16-3 network.*now makes 4-7-7-3"):
            call(X, y)
    np.testing.assert_array_equal(model.coefs_[0], kept)
    adaptive = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate="adaptive", max_iter=400,
                             n_iter_no_change=2, tol=0.5, random_state=0).fit(X, y)
    assert adaptive._learning_rate < adaptive.learning_rate_init  # divided by 5 at each plateau
    scaled = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate="invscaling", max_iter=3,
                           random_state=0).fit(X, y)
    assert scaled._learning_rate == pytest.approx(0.001 / (3 * len(X) + 1) ** 0.5)


def test_a_failed_fit_leaves_the_model_as_it_was(iris):
    X, y = iris
    model = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", max_iter=20, random_state=0).fit(X, y)
    weights, features, expected = [w.copy() for w in model.coefs_], model.n_features_in_, model.predict_proba(X)
    with pytest.raises(ValueError, match="one class"):
        model.fit(X[:, :3], np.zeros(len(X)))  # other features and one class: refused before any change
    model.set_params(warm_start=True, learning_rate_init=1e6)
    with pytest.raises(ValueError, match="diverged"):
        model.fit(X * 1e6, y)  # from the fitted weights, which it ruins in its first epoch
    assert model.n_features_in_ == features and model.n_iter_ == 20
    np.testing.assert_array_equal(model.coefs_[0], weights[0])
    np.testing.assert_array_equal(model.predict_proba(X), expected)
    fresh = MLPClassifier()
    with pytest.raises(ValueError):
        fresh.fit(X, np.zeros(len(X)))
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    learner = MLPClassifier(hidden_layer_sizes=(16,))
    with pytest.raises(ValueError, match="not among the classes"):
        learner.partial_fit(X, y, classes=[0, 1])
    learner.partial_fit(X, y, classes=[0, 1, 2])  # the first call again, with the right classes
    with pytest.raises(ValueError, match="not the same as on the first call"):
        learner.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_cosine_anneals_over_each_fit(iris):
    X, y = iris
    model = MLPClassifier(hidden_layer_sizes=(16,), learning_rate="cosine", learning_rate_init=0.01, max_iter=5,
                          n_iter_no_change=100, warm_start=True, random_state=0).fit(X, y)
    first = model.coefs_[0].copy()
    model.fit(X, y)  # starts again from learning_rate_init, not from the end of the cosine (0)
    assert model.n_iter_ == 10 and np.abs(model.coefs_[0] - first).max() > 1e-3


def test_bad_settings_and_data_are_one_value_error(iris):
    X, y = iris
    for params, message in (({"activation": "identity"}, "no identity activation"),
                            ({"solver": "lbfgs"}, "stochastic gradients only"),
                            ({"hidden_layer_sizes": (16, 0)}, "hidden_layer_sizes"),
                            ({"hidden_layer_sizes": (2**40,)}, "hidden_layer_sizes .* needs about"),
                            ({"alpha": -1.0}, "alpha"), ({"batch_size": 0}, "batch_size"),
                            ({"learning_rate": "fast"}, "learning_rate"), ({"threads": 0}, "threads")):
        with pytest.raises(ValueError, match=message):
            MLPClassifier(**params).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier().fit(np.where(X > 2, np.nan, X), y)
    with pytest.warns(UserWarning, match="clipped"):
        MLPClassifier(hidden_layer_sizes=(4,), batch_size=1000, max_iter=1).fit(X, y)


# ---------------------------------------------------------------- parameters files and images


@pytest.fixture(scope="module")
def shipped():
    return MLPClassifier.from_file(ROOT / "parameters.npz")


def test_the_shipped_model_reads_pixels_and_image_files(shipped, mnist_test, tmp_path):
    images, labels = mnist_test
    assert shipped.n_features_in_ == 784 and list(shipped.classes_) == [str(d) for d in range(10)]
    predicted = shipped.predict(images[:2000])
    assert np.mean(predicted == labels[:2000].astype(str)) > 0.97
    np.testing.assert_array_equal(shipped.predict(images[:50].reshape(-1, 28, 28)), predicted[:50])
    # A model of pixels reads any numbers on the pixels' 0-255 scale: the dtype changes nothing.
    np.testing.assert_allclose(shipped.predict_proba(images[:200].astype(np.float64)),
                               shipped.predict_proba(images[:200]), atol=1e-6)
    Image.fromarray(images[0].reshape(28, 28)).save(tmp_path / "a.png")
    assert shipped.predict(tmp_path / "a.png")[0] == shipped.predict([Image.open(tmp_path / "a.png")])[0] \
        == predicted[0]
    with pytest.raises(ValueError, match="784 features"):
        shipped.predict(np.zeros((3, 10), np.uint8))
    # A model fitted on images as floats 0-255 reads image files on that scale too.
    floats = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(
        images[:500].reshape(-1, 28, 28).astype(np.float64), labels[:500].astype(str))
    assert floats.input_scale_ == 1.0 and floats.preprocessing_ == "digit"
    np.testing.assert_allclose(floats.predict_proba(tmp_path / "a.png"),
                               floats.predict_proba(images[:1].astype(np.float64)), atol=1e-6)
    tuned = MLPClassifier.from_file(ROOT / "parameters.npz", warm_start=True, max_iter=1, solver="sgd",
                                    learning_rate_init=0.1, momentum=0.0, batch_size=32, random_state=0)
    tuned.fit(images[:2000], labels[:2000].astype(str))  # continues from the shipped weights (the seed's kernels)
    assert tuned.n_iter_ == 1 and np.mean(tuned.predict(images[2000:4000]) == labels[2000:4000].astype(str)) > 0.97


def test_sparse_matrices_fit_and_predict_as_their_dense_rows(mnist_test):
    """scikit-learn's MLPClassifier takes scipy.sparse X; this one refused it."""
    import scipy.sparse

    X, y = mnist_test[0][:1000] / 255, mnist_test[1][:1000]
    dense = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
    for kind in (scipy.sparse.csr_matrix, scipy.sparse.csc_matrix, scipy.sparse.coo_matrix):
        model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(kind(X), y)
        np.testing.assert_array_equal(model.coefs_[0], dense.coefs_[0])
        np.testing.assert_array_equal(model.predict_proba(kind(X[:50])), dense.predict_proba(X[:50]))


def test_image_files_are_read_on_the_scale_the_model_was_fitted_on(mnist_test, tmp_path):
    """A model fitted on images as floats in [0, 1] (X / 255) read image files as 0-255 from Python and as
    0-1 from `fastnet predict`; one fitted on floats in [0, 255] the other way round. Every way in now gives
    the probabilities of the arrays the model was fitted on, and images scaled otherwise cannot be read."""
    from fastnet.predict import evaluate_on_mnist
    from fastnet.trained import load

    images, labels = mnist_test[0].reshape(-1, 28, 28), mnist_test[1]
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    pixels = load(ROOT / "parameters.npz").read_images([tmp_path / "a.png"])  # the file as the CLI reads it
    for name, X, pixel_scale in (("uint8", images, 1 / 255), ("unit", images / 255, 1 / 255),
                                 ("pixels", images.astype(np.float32), 1.0)):
        model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X[:600], labels[:600])
        assert model.pixel_scale_ == pixel_scale, name
        model.save(tmp_path / f"{name}.npz")
        expected = model.predict_proba(X[:1])
        np.testing.assert_allclose(model.predict_proba(tmp_path / "a.png"), expected, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(model.predict_proba(images[:1]), expected, atol=1e-6, err_msg=name)  # uint8
        again = MLPClassifier.from_file(tmp_path / f"{name}.npz")
        np.testing.assert_allclose(again.predict_proba(tmp_path / "a.png"), expected, atol=1e-6, err_msg=name)
        cli = load(tmp_path / f"{name}.npz")  # what predict, evaluate and serve use
        np.testing.assert_allclose(cli.predict_proba(pixels), expected[:, np.argsort(model.classes_.astype(str))],
                                   atol=1e-6, err_msg=name)
        matrix = evaluate_on_mnist(cli)  # the MNIST test set, which X is on its scale
        assert abs(np.trace(matrix) / matrix.sum() - model.score(X, labels)) < 0.002, name
    standardised = (images[:600] - images.mean()) / images.std()
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(standardised, labels[:600])
    assert model.pixel_scale_ == 0
    with pytest.raises(FastnetError, match="cannot read image files"):
        model.predict(tmp_path / "a.png")
    with pytest.raises(FastnetError, match="cannot read image files or pixels"):
        model.predict(images[:1])
    model.save(tmp_path / "standardised.npz")
    with pytest.raises(FastnetError, match="cannot read image files"):
        load(tmp_path / "standardised.npz").predict_proba(pixels)


def test_from_file_sorts_classes_as_scikit_learn_does(tmp_path, mnist_test):
    """`fastnet train` orders class folders by their names as bytes, which, for names that are not UTF-8
    (written with \\xNN escapes), need not be their order as text; classes_ must be sorted (partial_fit's label
    encoding relies on it), so the output units are reordered with them, and predictions stay the CLI's."""
    from fastnet.parameters import Parameters, save
    from fastnet.trained import load

    from .conftest import new_network

    names = ["7", "\\xff", "a b", "3", "0", "1", "2", "4", "5", "6"]  # the order of a byte sort, unsorted as text
    save(tmp_path / "p.npz", Parameters(new_network(16, "relu"), names, preprocessing="digit"))
    model = MLPClassifier.from_file(tmp_path / "p.npz")
    assert list(model.classes_) == sorted(names)
    images = mnist_test[0][:200]
    cli = load(tmp_path / "p.npz").predict_proba(images).argmax(axis=1)
    np.testing.assert_array_equal(model.predict(images), np.array(names)[cli])
    labels = np.array(names)[cli]
    before = model.predict(images)
    model.set_params(learning_rate_init=1e-4).partial_fit(images, labels)  # its own predictions: barely moves
    assert np.mean(model.predict(images) == before) > 0.95
    save(tmp_path / "twice.npz", Parameters(new_network(16, "relu"), names[:9] + ["7"], preprocessing="digit"))
    with pytest.raises(ValueError, match="class names are not distinct"):
        MLPClassifier.from_file(tmp_path / "twice.npz")


def test_save_and_from_file_keep_classes_shapes_and_predictions(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((400, 5))
    labels = np.where(table[:, 0] + table[:, 1] > 0, 9, 4)
    model = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0).fit(table, labels)
    model.save(tmp_path / "table.npz")
    again = MLPClassifier.from_file(tmp_path / "table.npz")
    assert again.classes_.dtype == labels.dtype and list(again.classes_) == [4, 9]
    np.testing.assert_array_equal(again.predict_proba(table), model.predict_proba(table))
    assert np.mean(again.predict(table) == labels) > 0.95
    with pytest.raises(FastnetError, match="features, not images"):
        again.predict(tmp_path / "table.npz")
    pictures = rng.integers(0, 256, (90, 8, 6, 3), dtype=np.uint8)  # a stack of colour images
    colour = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(pictures, rng.integers(2, 5, 90))
    assert colour.input_shape_ == (8, 6, 3) and colour.preprocessing_ == "resize" and colour.n_features_in_ == 144
    colour.save(tmp_path / "colour.npz")
    Image.fromarray(pictures[0]).save(tmp_path / "p.png")
    assert MLPClassifier.from_file(tmp_path / "colour.npz").predict(tmp_path / "p.png")[0] == \
        colour.predict(pictures[:1])[0]
    # `fastnet evaluate` scores MNIST digits only; for the others it says what does score them
    from fastnet.predict import evaluate_on_mnist
    from fastnet.trained import load

    with pytest.raises(FastnetError, match=r"score it with its features in Python: fastnet\.MLPClassifier\.from_file"):
        evaluate_on_mnist(load(tmp_path / "table.npz"), tmp_path / "table.npz")
    with pytest.raises(FastnetError, match=r"reads 8x6x3 inputs .*score it with predict on a labelled folder"):
        evaluate_on_mnist(load(tmp_path / "colour.npz"), tmp_path / "colour.npz")


def test_without_scikit_learn_fastnet_imports_and_says_what_to_install():
    code = ("import sys; sys.modules['sklearn'] = None\n"  # as if scikit-learn were not installed
            "import fastnet, fastnet.trained\n"
            "fastnet.trained.load()\n"
            "try:\n    fastnet.MLPClassifier()\n"
            "except fastnet.errors.FastnetError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=fastnet._child_environment())
    assert result.returncode == 0, result.stderr
    assert "pip install scikit-learn" in result.stdout


# ---------------------------------------------------------------- beside scikit-learn's


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_accuracy_within_a_point_of_scikit_learns(dataset):
    """The same settings (scikit-learn's defaults) and splits for both estimators: fastnet's mean test accuracy
    over 5 seeds is at most 1 point below scikit-learn's."""
    X, y = (load_digits if dataset == "digits" else load_breast_cancer)(return_X_y=True)
    accuracies = {"fastnet": [], "scikit-learn": []}
    for seed in range(5):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
        if dataset == "breast_cancer":
            scaler = StandardScaler().fit(X_train)
            X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for name, estimator in (("fastnet", MLPClassifier), ("scikit-learn", ScikitLearnMLP)):
                accuracies[name].append(estimator(random_state=seed).fit(X_train, y_train).score(X_test, y_test))
    ours, theirs = np.mean(accuracies["fastnet"]), np.mean(accuracies["scikit-learn"])
    assert ours >= theirs - 0.01, accuracies
