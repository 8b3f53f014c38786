"""fastnet.MLPClassifier: scikit-learn's MLPClassifier, trained by fastnet's kernels.

    from fastnet import MLPClassifier
    model = MLPClassifier(hidden_layer_sizes=(128,), max_iter=10).fit(X, y)   # any 2-D numeric X, any labels
    model.predict(X), model.predict_proba(X), model.score(X, y)
    MLPClassifier.from_file("parameters.npz"); model.save("mine.npz")      # to and from the command line's files

The parameters keep scikit-learn's names and meanings; where fastnet's differ, the docstring of MLPClassifier
says how. uint8 X is read as pixels (X / 255, the sparse kernels for mostly-zero images); any other numbers as
float32 features. Needs scikit-learn (pip install scikit-learn).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import FastnetError
from .kernels import BACKENDS, get_backend
from .kernels.common import PIXEL_SCALE, Optimizer, input_scale, new_state
from .model import Network
from .parameters import Parameters, default_path, is_digit_model, load as load_parameters, save as save_parameters
from .trained import TrainedModel, as_files
from .training import MAX_HIDDEN_LAYERS, TrainConfig, check_data, check_size

ACTIVATION = {"logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}  # scikit-learn's names -> fastnet's
SCHEDULES = ("constant", "invscaling", "adaptive", "cosine")
MIN_LEARNING_RATE = 1e-6  # 'adaptive' stops once the rate is down to this, as scikit-learn's


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier: scikit-learn's MLPClassifier, parameter for parameter, on fastnet's
    compiled kernels.

    Differences in meaning from scikit-learn's (everything else means the same):
    - activation: 'logistic', 'tanh' or 'relu' ('identity' is not offered); the output is a softmax over the
      K classes also for two classes (scikit-learn uses one logistic unit there), so out_activation_ is
      'softmax' and coefs_[-1] has K columns;
    - solver: 'sgd' or 'adam' ('lbfgs' is not offered, nor its max_fun); fit and partial_fit take no
      sample_weight;
    - alpha: as scikit-learn's, an L2 penalty of alpha / batch size on the weights (not the biases) in the
      gradient of every batch for 'sgd'; for 'adam' the weights decay by learning rate * alpha / batch size
      per step instead, decoupled from the moments (AdamW);
    - learning_rate: 'constant', 'invscaling' and 'adaptive' as scikit-learn's (for 'sgd', changed once per
      epoch); fastnet's 'cosine' also anneals from learning_rate_init to 0 over max_iter epochs for either solver;
    - momentum: SGD's, applied as PyTorch's v = momentum v + g (the same steps as scikit-learn's at a constant
      learning rate);
    - loss_ and loss_curve_: the mean cross-entropy of each batch before its update plus the L2 penalty
      0.5 alpha |W|^2 / batch size, the penalty reckoned with the weights at the end of the epoch;
    - uint8 X is read as pixels, X / 255, other X as float32 numbers, and a model fitted on one reads the other
      the same way, except that a model fitted on float images reads uint8 images as it reads image files
      (below); a scipy.sparse X as its dense rows;
      fastnet also reads stacks of images (N, H, W) or (N, H, W, C), and, for a model of images, image files
      (paths, bytes, Pillow images) in predict, their pixels scaled as the images it was fitted on were (uint8,
      or floats in [0, 1] or [0, 255]: pixel_scale_);
    - threads: the compiled kernels' threads (None: all of Numba's); backend: 'numba' or the numpy reference;
    - a fit that fails (bad data, divergence) leaves the model as it was before it; Ctrl-C ends training as in
      scikit-learn, but after the epoch in progress (an epoch is one compiled call).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, threads=None, backend="numba"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.threads = threads
        self.backend = backend

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # as scikit-learn's MLPClassifier (read as dense rows: _dense)
        return tags

    # ------------------------------------------------------------------ training

    def fit(self, X, y) -> "MLPClassifier":
        """Train on X (N, features) and labels y for up to max_iter epochs (from where the last fit ended, with
        warm_start)."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None) -> "MLPClassifier":
        """One epoch over X, y, continuing from the last call; the first call must name all classes."""
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        return self._fit(X, y, incremental=True, classes=classes)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coefs_")

    def _fit(self, X, y, incremental: bool, classes=None) -> "MLPClassifier":
        """Train; if anything fails, the model is left as it was before the call (weights and all)."""
        before = dict(self.__dict__)
        network = self._network() if hasattr(self, "coefs_") else None
        kept = [p.copy() for p in network.params] if network is not None else []
        state = self.__dict__.get("_state")
        moments = [m.copy() for m in (state.first or []) + (state.second or [])] if state is not None else []
        step = int(state.step[0]) if state is not None else 0
        try:
            return self._fit_unguarded(X, y, incremental, classes)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            for param, copy in zip(network.params if network is not None else [], kept):
                param[...] = copy
            if state is not None:
                for moment, copy in zip((state.first or []) + (state.second or []), moments):
                    moment[...] = copy
                state.step[0] = step
            raise

    def _fit_unguarded(self, X, y, incremental: bool, classes) -> "MLPClassifier":
        self._check_params()
        first = not hasattr(self, "coefs_") or not (self.warm_start or incremental)
        X, input_shape = _flat_images(X)
        X, y = validate_data(self, X, y, reset=first, dtype=[np.float32, np.uint8], order="C", accept_sparse=SPARSE)
        X = _dense(X)
        check_classification_targets(y)
        self.classes_ = self._classes(y, first, incremental, classes)
        labels = np.searchsorted(self.classes_, y)
        if first:
            self.input_scale_ = input_scale(X.dtype)
            self.input_shape_ = input_shape or (X.shape[1],)
            self.preprocessing_ = "none" if input_shape is None else \
                "digit" if is_digit_model(input_shape, [str(c) for c in self.classes_]) else "resize"
            self.pixel_scale_ = PIXEL_SCALE if input_shape is None else _pixel_scale(X)
        elif input_shape is not None and input_shape != self.input_shape_:
            raise ValueError(f"X holds images of shape {input_shape}; this model reads {self.input_shape_}")
        rows = self._rows(X)
        random = check_random_state(self.random_state)
        train, valid = np.arange(len(rows)), None
        if self.early_stopping and not incremental:  # scikit-learn's split: stratified, before the batch size
            train, valid = train_test_split(train, random_state=random, test_size=self.validation_fraction,
                                            stratify=labels)
            if len(valid) < 2:
                raise ValueError("the validation set is too small: raise validation_fraction or pass more samples")
        batch = min(200, len(train)) if self.batch_size == "auto" else self.batch_size
        if batch > len(train):
            warnings.warn(f"batch_size {batch} is larger than the {len(train)} samples; it is clipped to "
                          f"{len(train)}")
            batch = len(train)
        sizes = (rows.shape[1], *self._hidden(), len(self.classes_))
        fitted = None if first else (self.coefs_[0].shape[0], *(w.shape[1] for w in self.coefs_))
        if fitted is not None and fitted != sizes:  # it would go on with the old network, saying nothing
            raise ValueError(f"{'partial_fit' if incremental else 'warm_start'} continues the fitted "
                             f"{'-'.join(map(str, fitted))} network, and hidden_layer_sizes="
                             f"{self.hidden_layer_sizes!r} now makes {'-'.join(map(str, sizes))}: set "
                             "warm_start=False (or fit a new estimator)")
        check_data(rows, labels, len(self.classes_))
        check_size(TrainConfig(batch_size=batch, hidden=sizes[1:-1]), sizes, len(train),
                   {"batch_size": "batch_size", "hidden": "hidden_layer_sizes"}.get)
        generator = np.random.default_rng(random.randint(np.iinfo(np.int32).max))
        if first:
            network = Network.initialise_as_scikit_learn(sizes, ACTIVATION[self.activation], generator)
            self.coefs_, self.intercepts_ = network.weights, network.biases
            self.n_layers_, self.n_outputs_, self.out_activation_ = len(sizes), len(self.classes_), "softmax"
            self._new_history()
        if not incremental or not hasattr(self, "_state"):  # a new optimiser for every fit, as scikit-learn's
            self._learning_rate = float(self.learning_rate_init)
            self._state = new_state(self._network().params, self._optimizer(self._learning_rate, batch))
        with self._threads():
            self._epochs(rows, labels, train, valid, batch, generator, incremental)
        return self

    def _new_history(self) -> None:
        """The training record of a network that has not been trained here yet."""
        self.n_iter_, self.t_, self.loss_curve_, self._no_improvement = 0, 0, [], 0
        self._learning_rate, self._best_params = float(self.learning_rate_init), None
        self.best_loss_ = self.validation_scores_ = self.best_validation_score_ = None  # _epochs sets them

    def _epochs(self, rows, labels, train, valid, batch, generator, incremental) -> None:
        """scikit-learn's stochastic loop: epochs until max_iter, or (without early stopping) until the training
        loss, or (with it) the validation accuracy, has not improved by tol for n_iter_no_change epochs. Ctrl-C
        ends it as scikit-learn's: a warning, and the model as it stands (the best, with early stopping)."""
        backend, network = get_backend(self.backend), self._network()
        early = valid is not None
        if early and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        elif not early and self.best_loss_ is None:
            self.best_loss_ = np.inf
        data = backend.prepare(rows)
        try:
            for epoch in range(1 if incremental else self.max_iter):
                order = generator.permutation(train) if self.shuffle else train
                learning_rate = self._rate_this_epoch(self.n_iter_ if incremental else epoch)
                loss_sum, _, _ = backend.train_epoch(network.params, self._state, data, labels, order, batch,
                                                     self._optimizer(learning_rate, batch), network.activation_code)
                if not (math.isfinite(loss_sum) and network.all_finite()):  # scikit-learn's tolerates a big loss
                    raise FastnetError(f"training diverged in epoch {self.n_iter_ + 1} at learning rate "
                                       f"{learning_rate:g}; the model is as it was before this fit: lower "
                                       "learning_rate_init")
                self.n_iter_ += 1
                self.t_ += len(order)
                squares = sum(float(np.square(w, dtype=np.float64).sum()) for w in self.coefs_)
                n_batches = -(-len(order) // batch)  # each adds 0.5 alpha |W|^2 / batch size for its batch
                self.loss_ = (loss_sum + n_batches * 0.5 * self.alpha * squares) / len(order)
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                if early:
                    score = float((self._probabilities(rows[valid]).argmax(axis=1) == labels[valid]).mean())
                    self.validation_scores_.append(score)
                    if self.verbose:
                        print(f"Validation score: {score:f}")
                    improved = score >= self.best_validation_score_ + self.tol
                    if score > self.best_validation_score_:
                        self.best_validation_score_ = score
                        self._best_params = [p.copy() for p in network.params]
                else:
                    improved = self.loss_ <= self.best_loss_ - self.tol
                    self.best_loss_ = min(self.best_loss_, self.loss_)
                self._no_improvement = 0 if improved else self._no_improvement + 1
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._learning_rate = self.learning_rate_init / (self.t_ + 1) ** self.power_t
                if self._no_improvement > self.n_iter_no_change:
                    if self.solver == "sgd" and self.learning_rate == "adaptive" and \
                            self._learning_rate > MIN_LEARNING_RATE:
                        self._learning_rate /= 5  # scikit-learn's: a fifth, until it is 1e-6 or less
                        self._no_improvement = 0
                    else:
                        if self.verbose:
                            print(f"{'Validation score' if early else 'Training loss'} did not improve more than "
                                  f"tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs. Stopping.")
                        break
            else:
                if not incremental:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                                  "optimization hasn't converged yet.", ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early and self._best_params is not None:  # early stopping keeps the best weights (of every fit)
            for param, kept in zip(network.params, self._best_params):
                param[...] = kept

    def _rate_this_epoch(self, epoch: int) -> float:
        """The learning rate of an epoch: cosine anneals over the max_iter epochs of each fit (partial_fit: over
        max_iter calls, then again from the top)."""
        if self.learning_rate == "cosine":
            return self.learning_rate_init * 0.5 * (1.0 + math.cos(math.pi * (epoch % self.max_iter) / self.max_iter))
        return self._learning_rate if self.solver == "sgd" else float(self.learning_rate_init)

    def _optimizer(self, learning_rate: float, batch: int) -> Optimizer:
        decay = self.alpha / batch
        if self.solver == "adam":
            return Optimizer("adam", learning_rate, weight_decay=decay, beta1=self.beta_1, beta2=self.beta_2,
                             epsilon=self.epsilon)
        return Optimizer("sgd", learning_rate, self.momentum, bool(self.nesterovs_momentum and self.momentum > 0),
                         decay)

    def _classes(self, y, first: bool, incremental: bool, classes) -> np.ndarray:
        """classes_ for this fit: the sorted distinct labels of y (for partial_fit, the classes its first call
        named); checked against y."""
        if incremental and first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            found = np.unique(np.asarray(classes))
        elif incremental:
            found = self.classes_
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), found):
                raise ValueError(f"classes={list(classes)} is not the same as on the first call to partial_fit, "
                                 f"{found.tolist()}")
        elif first:
            found = np.unique(y)
        else:
            found = self.classes_
            if not np.array_equal(np.unique(y), found):
                raise ValueError(f"warm_start can only be used where y has the same classes as in the previous "
                                 f"call to fit: previously {found.tolist()}, now {np.unique(y).tolist()}")
        if len(found) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least two classes to learn; y has one class "
                             f"({found[0]})" if len(found) else "y has no class")
        unknown = np.setdiff1d(y, found)
        if len(unknown):
            raise ValueError(f"y has labels {unknown[:5].tolist()} that are not among the classes {found.tolist()}")
        return found

    def _check_params(self) -> None:
        """scikit-learn checks parameters in fit, not in __init__: one ValueError naming the first bad one."""
        def number(name, kind, low, high=math.inf, low_open=False, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or \
                    value < low or (low_open and value == low) or value > high or (high_open and value == high):
                bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                raise ValueError(f"{name}={value!r}: must be a {'whole ' if kind is Integral else ''}number in "
                                 f"{bounds}")

        for name, choices in (("activation", ACTIVATION), ("solver", ("sgd", "adam")),
                              ("learning_rate", SCHEDULES), ("backend", BACKENDS)):
            if getattr(self, name) not in choices:
                extra = {"identity": " (fastnet has no identity activation)",
                         "lbfgs": " (fastnet trains by stochastic gradients only)"}.get(getattr(self, name), "")
                raise ValueError(f"{name}={getattr(self, name)!r}: must be one of {', '.join(choices)}{extra}")
        self._hidden()
        if self.batch_size != "auto":
            number("batch_size", Integral, 1)
        for name in ("shuffle", "verbose", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_, Integral)):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be True or False")
        number("alpha", Real, 0)
        number("learning_rate_init", Real, 0, low_open=True)
        number("power_t", Real, 0)
        number("max_iter", Integral, 1)
        number("tol", Real, 0)
        number("momentum", Real, 0, 1)
        number("validation_fraction", Real, 0, 1, low_open=True, high_open=True)
        number("beta_1", Real, 0, 1, high_open=True)
        number("beta_2", Real, 0, 1, high_open=True)
        number("epsilon", Real, 0, low_open=True)
        number("n_iter_no_change", Integral, 1)
        if self.threads is not None:
            import numba

            number("threads", Integral, 1, numba.config.NUMBA_NUM_THREADS)

    def _hidden(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if not sizes or len(sizes) > MAX_HIDDEN_LAYERS or \
                not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r}: must be 1 to {MAX_HIDDEN_LAYERS} "
                             "positive whole numbers (fastnet trains networks with at least one hidden layer)")
        return tuple(int(s) for s in sizes)

    def _threads(self):
        """The kernels' thread count for one call, then back to what it was."""
        if self.threads is None:
            return contextlib.nullcontext()
        if self.backend == "numpy":
            from threadpoolctl import threadpool_limits

            return threadpool_limits(self.threads)
        return _numba_threads(self.threads)

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) probabilities of the classes_, float64, each row summing to 1."""
        check_is_fitted(self)
        files = as_files(X)
        if files is not None:
            rows = self._trained().read_images(files)  # uint8 pixels, read as pixel_scale_ says
        else:
            X, input_shape = _flat_images(X)
            if input_shape is not None and input_shape != self.input_shape_:
                raise ValueError(f"X holds images of shape {input_shape}; this model reads {self.input_shape_}")
            rows = self._rows(_dense(validate_data(self, X, reset=False, dtype=[np.float32, np.uint8], order="C",
                                                   accept_sparse=SPARSE)))
        with self._threads():
            probs = self._probabilities(rows).astype(np.float64)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample (labels as in y)."""
        probabilities = self.predict_proba(X)  # first: it checks that the model is fitted
        return self.classes_[probabilities.argmax(axis=1)]

    def _probabilities(self, rows: np.ndarray) -> np.ndarray:
        return self._trained().predict_proba(rows)

    def _network(self) -> Network:
        return Network(self.coefs_, self.intercepts_, ACTIVATION[self.activation])

    def _rows(self, X: np.ndarray) -> np.ndarray:
        """X as the kernels read it for this model: uint8 pixels as they are for a model of pixels (whose
        other inputs are scaled to match, pixel / 255) and for a model of float images (which reads them as
        its image files, pixel_scale_), else float32 numbers."""
        if self.input_scale_ != PIXEL_SCALE:
            if X.dtype == np.uint8 and self.preprocessing_ != "none":
                return np.ascontiguousarray(X)
            return np.ascontiguousarray(X, np.float32)
        if X.dtype == np.uint8:
            return np.ascontiguousarray(X)
        return np.ascontiguousarray(X * np.float32(PIXEL_SCALE), np.float32)

    def _trained(self) -> TrainedModel:
        return TrainedModel(self._network(), [str(c) for c in self.classes_], self.preprocessing_, self.input_shape_,
                            self.input_scale_, self.backend,
                            pixel_scale=getattr(self, "pixel_scale_", PIXEL_SCALE))  # (older pickles lack it)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write the fitted model as a parameters file (parameters.py), as `fastnet train` writes them."""
        check_is_fitted(self)
        model = self._trained()
        numeric = self.classes_.dtype.kind in "biuf"
        settings = {name: _plain(value) for name, value in self.get_params().items()}
        settings = {name: value for name, value in settings.items()  # (a RandomState is not recorded)
                    if isinstance(value, (str, int, float, bool, list, type(None)))}
        save_parameters(path, Parameters(model.network, model.class_names, settings, float("nan"),
                                         model.preprocessing, model.input_shape, model.input_scale,
                                         self.classes_ if numeric else None, model.pixel_scale))

    @classmethod
    def from_file(cls, path: str | Path | None = None, **params) -> "MLPClassifier":
        """A fitted MLPClassifier from a parameters file (None: ./parameters.npz, else the model fastnet ships);
        params set its parameters (threads, backend; the rest matter to later fits with warm_start)."""
        fixed = sorted({"hidden_layer_sizes", "activation"} & set(params))
        if fixed:
            raise ValueError(f"from_file: {', '.join(fixed)} come from the file")
        stored = load_parameters(default_path() if path is None else path)
        network = stored.network
        model = cls(hidden_layer_sizes=network.hidden, activation={v: k for k, v in ACTIVATION.items()}[
            network.activation], **params)
        classes = stored.classes if stored.classes is not None else np.array(stored.class_names)  # distinct
        # classes_ sorted, as scikit-learn's (np.unique), whose label encoding relies on it: `fastnet train` sorts
        # folder names as bytes, which need not be their order as text; the output units are put in that order.
        order = np.argsort(classes, kind="stable")
        weights, biases = list(network.weights), list(network.biases)
        weights[-1], biases[-1] = np.ascontiguousarray(weights[-1][:, order]), biases[-1][order]
        model.classes_ = classes[order]
        model.n_features_in_ = network.layer_sizes[0]
        model.coefs_, model.intercepts_ = weights, biases
        model.n_layers_, model.n_outputs_, model.out_activation_ = len(network.layer_sizes), len(model.classes_), \
            "softmax"
        model.input_shape_, model.preprocessing_, model.input_scale_ = stored.input_shape, stored.preprocessing, \
            stored.input_scale
        model.pixel_scale_ = stored.pixel_scale
        model._new_history()  # the file keeps no history; fit with warm_start, or partial_fit, continue from it
        return model


def _plain(value):
    """A parameter's value as JSON has it: numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


SPARSE = ("csr", "csc", "coo")  # scipy.sparse formats fit and predict take


def _dense(X):
    """X (validated) as the dense rows the kernels read: a mostly-zero X is read through its ink index
    (kernels/ink.py), which skips the zeros a sparse matrix leaves out; the cost is the dense copy's memory."""
    return np.ascontiguousarray(X.toarray()) if hasattr(X, "toarray") else X


def _pixel_scale(images: np.ndarray) -> float:
    """What an image file's pixel p (0 to 255) is to a model fitted on these images (parameters.py's
    pixel_scale): p / 255 for uint8 pixels or floats in [0, 1] (X / 255), p for floats in [0, 255], else 0 (the
    model cannot read image files)."""
    if images.dtype == np.uint8:
        return PIXEL_SCALE
    low, high = float(images.min()), float(images.max())
    return PIXEL_SCALE if 0 <= low and high <= 1 else 1.0 if 0 <= low and high <= 255 else 0.0


def _flat_images(X):
    """(X as (N, features), the image shape (H, W, C)) for a stack of images (N, H, W) or (N, H, W, C); else
    (X, None)."""
    if isinstance(X, np.ndarray) and X.ndim in (3, 4) and X.dtype.kind in "biuf":
        shape = X.shape[1:] + ((1,) if X.ndim == 3 else ())
        if shape[2] not in (1, 3):
            raise ValueError(f"images of shape {X.shape[1:]}: fastnet reads 1 channel (gray) or 3 (colour)")
        return X.reshape(len(X), -1), tuple(int(s) for s in shape)
    return X, None


@contextlib.contextmanager
def _numba_threads(threads: int):
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(before)
