"""NeuralNet, as nolearn's (`nolearn.lasagne`): a scikit-learn-style estimator over a list of
layers, everything a training run needs a constructor argument.

    net = NeuralNet(
        layers=[("input", layers.InputLayer), ("hidden", layers.DenseLayer), ("output", layers.DenseLayer)],
        input_shape=(None, 784), hidden_num_units=100, output_nonlinearity=softmax, output_num_units=10,
        update=nesterov_momentum, update_learning_rate=0.01, update_momentum=0.9, max_epochs=5, verbose=1)
    net.fit(X, y); net.predict(X_test); net.score(X_test, y_test); net.train_history_

Keyword arguments `<layer>_<param>` go to the layer named <layer>, `update_<param>` to the update
rule, `objective_<param>` to the objective (l1, l2, loss_function). The whole training step
(forward, backward, update) is one kd.function; evaluation and prediction are two more, with
deterministic=True. The batch size is a size variable of the input, so the last, smaller batch
runs the same compiled function.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections import OrderedDict

import numpy as np

from .. import numpy as knp
from ..frontend import config, ivector, matrix, tensor
from . import layers as Lyr
from . import objectives as O
from .updates import nesterov_momentum

# --- batches and the validation split ---------------------------------------------------------------------


class BatchIterator:
    """Batches of (X, y): `for Xb, yb in BatchIterator(128, shuffle=True)(X, y)`. Override
    `transform(Xb, yb)` for augmentation. X may be an array or a dict of arrays (several inputs)."""

    def __init__(self, batch_size: int = 128, shuffle: bool = False, seed: int = 42):
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"BatchIterator: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size, self.shuffle = int(batch_size), shuffle  # numpy ints too
        self.random = np.random.RandomState(seed)

    def __call__(self, X, y=None):
        self.X, self.y = X, y
        return self

    @property
    def n_samples(self) -> int:
        X = self.X
        return len(next(iter(X.values()))) if isinstance(X, dict) else len(X)

    def __len__(self) -> int:
        return (self.n_samples + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n, bs = self.n_samples, self.batch_size
        order = self.random.permutation(n) if self.shuffle else None
        for i in range(0, n, bs):
            sl = slice(i, i + bs) if order is None else np.sort(order[i:i + bs])
            Xb = {k: v[sl] for k, v in self.X.items()} if isinstance(self.X, dict) else self.X[sl]
            yb = None if self.y is None else self.y[sl]
            yield self.transform(Xb, yb)

    def transform(self, Xb, yb):
        return Xb, yb

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("X", None)
        state.pop("y", None)
        return state


class TrainSplit:
    """The validation split: the last `eval_size` of each class (stratify=True, classification) or of
    the samples (after a fixed shuffle); eval_size 0 or None: no validation."""

    def __init__(self, eval_size: float | None = 0.2, stratify: bool = True, seed: int = 42):
        if eval_size is not None and not 0 <= eval_size < 1:
            raise ValueError(f"TrainSplit: eval_size must be in [0, 1), got {eval_size}")
        self.eval_size, self.stratify, self.seed = eval_size, stratify, seed

    def __call__(self, X, y, net):
        n = len(next(iter(X.values()))) if isinstance(X, dict) else len(X)
        if not self.eval_size:
            return X, _take(X, slice(0, 0)), y, None if y is None else y[:0]
        rng = np.random.RandomState(self.seed)
        if self.stratify and not net.regression and y is not None:
            valid = []
            for c in np.unique(y):
                idx = np.flatnonzero(y == c)
                idx = idx[rng.permutation(len(idx))]
                valid.append(idx[:round(len(idx) * self.eval_size)])
            valid = np.sort(np.concatenate(valid))
        else:
            valid = np.sort(rng.permutation(n)[:round(n * self.eval_size)])
        mask = np.ones(n, bool)
        mask[valid] = False
        train = np.flatnonzero(mask)
        return _take(X, train), _take(X, valid), None if y is None else y[train], None if y is None else y[valid]


def _take(X, idx):
    return {k: v[idx] for k, v in X.items()} if isinstance(X, dict) else X[idx]


# --- handlers -------------------------------------------------------------------------------------------------


class PrintLog:
    """nolearn's epoch table: epoch, train loss, valid loss, train/val, valid acc, duration; the
    best losses so far highlighted on a terminal."""

    def __init__(self, stream=None):
        self.stream = stream
        self.first = True

    def __call__(self, nn, train_history):
        out = self.stream or sys.stdout
        color = out.isatty() if hasattr(out, "isatty") else False
        h = train_history[-1]
        if self.first:
            cols = [("epoch", 7), ("trn loss", 10), ("val loss", 10), ("trn/val", 9)]
            cols += [] if nn.regression else [("valid acc", 11)]
            cols += [("dur", 6)]
            print("  ".join(f"{c:>{w}}" for c, w in cols), file=out)
            print("  ".join("-" * w for _, w in cols), file=out)
            self.first = False

        def mark(text, best, code):
            return f"\033[{code}m{text}\033[0m" if best and color else text
        row = f"{h['epoch']:>7}  " + mark(f"{h['train_loss']:>10.5f}", h["train_loss_best"], 36)
        vl = h["valid_loss"]
        row += "  " + (mark(f"{vl:>10.5f}", h["valid_loss_best"], 32) if not np.isnan(vl) else f"{'-':>10}")
        row += f"  {h['train_loss'] / vl:>9.5f}" if not np.isnan(vl) and vl else f"  {'-':>9}"
        if not nn.regression:
            va = h["valid_accuracy"]
            row += f"  {va:>11.5f}" if not np.isnan(va) else f"  {'-':>11}"
        row += f"  {h['dur']:>5.2f}s"
        print(row, file=out, flush=True)


class PrintLayerInfo:
    """The network's layers and parameter count, printed once before training."""

    def __call__(self, nn, train_history=None):
        n = Lyr.count_params(nn.layers_[-1] if isinstance(nn.layers_, list) else list(nn.layers_.values())[-1])
        print(f"# Neural Network with {n} learnable parameters\n")
        print(f"  {'#':>3}  {'name':<12}  {'type':<18}  {'size'}")
        for k, (name, layer) in enumerate(nn.layers_.items()):
            shape = "x".join(str(d) for d in layer.output_shape[1:])
            print(f"  {k:>3}  {name:<12}  {type(layer).__name__:<18}  {shape}")
        print()


class EarlyStopping:
    """Stop when the validation loss has not improved for `patience` epochs, and restore the
    parameters of the best epoch (an on_epoch_finished handler)."""

    def __init__(self, patience: int = 10, verbose: bool = True):
        self.patience, self.verbose = patience, verbose
        self.best_loss, self.best_epoch, self.best_weights = np.inf, 0, None

    def __call__(self, nn, train_history):
        h = train_history[-1]
        loss = h["train_loss"] if np.isnan(h["valid_loss"]) else h["valid_loss"]
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, h["epoch"]
            self.best_weights = nn.get_all_params_values()
        elif self.best_epoch + self.patience <= h["epoch"]:
            if self.verbose:
                print(f"Early stopping: the best valid loss was {self.best_loss:.6f} at epoch {self.best_epoch}")
            nn.load_params_from(self.best_weights)
            raise StopIteration()


# --- the estimator ----------------------------------------------------------------------------------------------


def _accepted(cls) -> tuple[set, list]:
    """The keyword parameters a layer class takes (through its **kwargs chain), and those required."""
    names, required = {"name"}, []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        params = list(sig.parameters.values())[1:]
        for p in params:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            names.add(p.name)
            if p.default is p.empty and p.name not in ("incoming", "incomings") and p.name not in required:
                required.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in params) or klass is Lyr.InputLayer:
            break  # InputLayer takes **kwargs but does not pass them on
    return names, required


class NeuralNet:
    """nolearn's NeuralNet (see the module's docstring)."""

    def __init__(self, layers, update=nesterov_momentum, loss=None, objective=None, objective_loss_function=None,
                 batch_iterator_train=None, batch_iterator_test=None, regression: bool = False,
                 max_epochs: int = 100, train_split=None, custom_scores=None, X_tensor_type=None,
                 y_tensor_type=None, on_batch_finished=None, on_epoch_finished=None, on_training_started=None,
                 on_training_finished=None, more_params=None, check_input: bool = True, verbose: int = 0,
                 **kwargs):
        if loss is not None:
            raise TypeError("NeuralNet: 'loss' was renamed; pass objective_loss_function=...")
        self.layers = layers
        self.update = update
        self.objective = objective
        if objective_loss_function is None:
            objective_loss_function = O.squared_error if regression else O.categorical_crossentropy
        self.objective_loss_function = objective_loss_function
        self.batch_iterator_train = BatchIterator(batch_size=128, shuffle=True) if batch_iterator_train is None \
            else batch_iterator_train
        self.batch_iterator_test = BatchIterator(batch_size=128) if batch_iterator_test is None else batch_iterator_test
        self.regression = regression
        if not isinstance(max_epochs, (int, np.integer)) or max_epochs < 0:
            raise ValueError(f"NeuralNet: max_epochs must be a non-negative int, got {max_epochs!r}")
        self.max_epochs = int(max_epochs)
        self.train_split = TrainSplit(eval_size=0.2) if train_split is None else train_split
        self.custom_scores = custom_scores or []
        self.X_tensor_type, self.y_tensor_type = X_tensor_type, y_tensor_type
        self.on_batch_finished = _as_list(on_batch_finished)
        self.on_epoch_finished = _as_list(on_epoch_finished)
        self.on_training_started = _as_list(on_training_started)
        self.on_training_finished = _as_list(on_training_finished)
        self.more_params = more_params or {}
        self.check_input = check_input
        self.verbose = verbose
        if verbose:
            self.on_epoch_finished.append(PrintLog())
            self.on_training_started.append(PrintLayerInfo())
        self.train_history_ = []
        self._initialized = False
        self._layer_specs = self._specs(layers)
        self._check_kwargs(kwargs)
        for k, v in kwargs.items():
            setattr(self, k, v)
        self._kwargs = kwargs

    # --- arguments -------------------------------------------------------------------------------------
    @staticmethod
    def _specs(layers) -> list:
        if isinstance(layers, Lyr.Layer):
            return []
        specs, counts = [], {}
        for item in layers:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                name, cls = item
                params = {}
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
                cls, params = item
                name = params.get("name")
            elif isinstance(item, type):
                cls, params, name = item, {}, None
            else:
                raise TypeError(f"NeuralNet: each entry of layers is (name, LayerClass) or (LayerClass, {{params}}); "
                                f"got {item!r}")
            if not (isinstance(cls, type) and issubclass(cls, Lyr.Layer)):
                raise TypeError(f"NeuralNet: {cls!r} is not a layer class")
            if name is None:
                base = cls.__name__.lower().replace("layer", "")
                name = f"{base}{counts.get(base, 0)}"
                counts[base] = counts.get(base, 0) + 1
            specs.append((name, cls, dict(params)))
        names = [s[0] for s in specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"NeuralNet: layer name(s) {sorted(dup)} used twice")
        return specs

    def _check_kwargs(self, kwargs) -> None:
        layer_names = [s[0] for s in self._layer_specs]
        for key in kwargs:
            if key.startswith(("update_", "objective_", "batch_iterator_")):
                continue
            owner = max((n for n in layer_names if key.startswith(n + "_")), key=len, default=None)
            if owner is None:
                raise TypeError(f"NeuralNet got an unexpected keyword argument {key!r}: not <layer>_<param> for a "
                                f"layer named {', '.join(layer_names) or '(none)'}, nor update_*/objective_*")
            cls = next(s[1] for s in self._layer_specs if s[0] == owner)
            param = key[len(owner) + 1:]
            accepted, _ = _accepted(cls)
            if param not in accepted:
                raise TypeError(f"NeuralNet: {key!r}: layer {owner!r} ({cls.__name__}) has no parameter {param!r}; "
                                f"its parameters: {', '.join(sorted(accepted - {'name', 'incoming', 'incomings'}))}")

    def _layer_kwargs(self, name: str, cls, params: dict) -> dict:
        kw = dict(params)
        prefix = name + "_"
        for key, v in self._kwargs.items():
            if key.startswith(prefix):
                others = [n for n, _, _ in self._layer_specs if n != name and n.startswith(prefix)
                          and key.startswith(n + "_")]
                if not others:
                    kw[key[len(prefix):]] = v
        _, required = _accepted(cls)
        missing = [p for p in required if p not in kw]
        if missing:
            raise TypeError(f"NeuralNet: layer {name!r} ({cls.__name__}) needs {', '.join(missing)}: pass "
                            + ", ".join(f"{name}_{p}=..." for p in missing))
        return kw

    # --- building ----------------------------------------------------------------------------------------
    def initialize_layers(self):
        """Create the layers (each fed by the one before unless its `incoming(s)` names others)."""
        self.layers_ = OrderedDict()
        if isinstance(self.layers, Lyr.Layer):
            for lay in Lyr.get_all_layers(self.layers):
                name = lay.name or f"{type(lay).__name__.lower()}{len(self.layers_)}"
                self.layers_[name] = lay
            return self.layers
        prev = None
        for name, cls, params in self._layer_specs:
            kw = self._layer_kwargs(name, cls, params)
            accepted, _ = _accepted(cls)
            for key in ("incoming", "incomings"):
                if key in kw:
                    v = kw[key]
                    kw[key] = [self.layers_[x] if isinstance(x, str) else x for x in v] if isinstance(v, (list, tuple)) \
                        else (self.layers_[v] if isinstance(v, str) else v)
            if "incomings" in accepted and "incomings" not in kw:
                raise TypeError(f"NeuralNet: layer {name!r} ({cls.__name__}) needs {name}_incomings=[layer names]")
            if "incoming" in accepted and "incoming" not in kw:
                if prev is None:
                    raise TypeError(f"NeuralNet: layer {name!r} ({cls.__name__}) has no layer before it; the first "
                                    f"layer must be an InputLayer")
                kw["incoming"] = prev
            kw["name"] = name
            try:
                prev = cls(**kw)
            except TypeError as e:
                raise TypeError(f"NeuralNet: creating layer {name!r} ({cls.__name__}): {e}") from e
            self.layers_[name] = prev
        return prev

    def _output_layer(self):
        return list(self.layers_.values())[-1]

    def _input_layers(self) -> list:
        return [lay for lay in self.layers_.values() if isinstance(lay, Lyr.InputLayer)]

    def _objective(self, output_layer, target, deterministic: bool):
        prediction = Lyr.get_output(output_layer, deterministic=deterministic)
        loss = O.aggregate(self.objective_loss_function(prediction, target))
        l1 = self._kwargs.get("objective_l1", 0)
        l2 = self._kwargs.get("objective_l2", 0)
        if l1 or l2:
            for p in Lyr.get_all_params(output_layer, regularizable=True):
                if l1:
                    loss = loss + l1 * knp.sum(knp.abs(p))
                if l2:
                    loss = loss + l2 * knp.sum(p * p)
        return prediction, loss

    def initialize(self):
        """Create the layers and compile the training, evaluation and prediction functions."""
        if self._initialized:
            return
        from ..function import function
        out = self._output_layer() if hasattr(self, "layers_") else self.initialize_layers()
        inputs = [lay.input_var for lay in self._input_layers()]
        if not inputs:
            raise ValueError("NeuralNet: the network has no InputLayer")
        if self.y_tensor_type is not None:
            y = self.y_tensor_type("y")
        elif self.regression:
            y = matrix("y", dtype=config.floatX)
        else:
            y = ivector("y")
        if self.regression and out.output_shape and len(out.output_shape) == 1:
            y = tensor("y", 1, config.floatX)
        self.y_var = y
        t0 = time.perf_counter()
        if self.objective is not None:
            loss = self.objective(self.layers_, target=y, **{k[10:]: v for k, v in self._kwargs.items()
                                                              if k.startswith("objective_")})
            loss_eval = self.objective(self.layers_, target=y, deterministic=True,
                                       **{k[10:]: v for k, v in self._kwargs.items() if k.startswith("objective_")})
            prediction = Lyr.get_output(out, deterministic=True)
        else:
            _, loss = self._objective(out, y, deterministic=False)
        state = Lyr.get_state_updates(out)
        params = Lyr.get_all_params(out, trainable=True)
        if not params:
            raise ValueError("NeuralNet: the network has no trainable parameters")
        update_kw = {k[len("update_"):]: v for k, v in self._kwargs.items() if k.startswith("update_")}
        try:
            updates = self.update(loss, params, **update_kw)
        except TypeError as e:
            raise TypeError(f"NeuralNet: the update rule {getattr(self.update, '__name__', self.update)}: {e} "
                            f"(pass its hyperparameters as update_<name>=...)") from e
        updates.update(state)
        if self.objective is None:
            prediction, loss_eval = self._objective(out, y, deterministic=True)
        scores = [loss_eval]
        if not self.regression:
            pred_y = prediction if prediction.ndim == 2 else knp.flatten(prediction, 2)
            scores.append(knp.mean(O.categorical_accuracy(pred_y, y)))
        # two modules, built side by side (the C compiler runs outside the GIL): the training step,
        # and evaluation, whose prediction output also serves predict (with a dummy target)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as pool:
            train = pool.submit(function, inputs + [y], loss, updates=list(updates.items()), name="train")
            evaluate = pool.submit(function, inputs + [y], scores + [prediction], name="eval")
            self.train_iter_, self.eval_iter_ = train.result(), evaluate.result()
        self.predict_iter_ = _Predict(self.eval_iter_, y, self._output_layer().output_shape)
        self.build_seconds_ = time.perf_counter() - t0
        self._initialized = True

    # --- data --------------------------------------------------------------------------------------------
    def _check_X(self, X):
        if isinstance(X, dict):
            return {k: self._check_X(v) for k, v in X.items()}
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"NeuralNet: X must be numbers, got {X.dtype}")
        X = np.ascontiguousarray(X, dtype=config.floatX)
        lay = self._input_layers()[0] if self._initialized else None
        if lay is not None:
            want = lay.shape
            if X.ndim != len(want) or any(w is not None and w != d for w, d in zip(want, X.shape)):
                raise ValueError(f"NeuralNet: X has shape {X.shape}, the input layer takes {want}")
        return X

    def _check_y(self, y, n):
        y = np.asarray(y)
        if len(y) != n:
            raise ValueError(f"NeuralNet: X has {n} samples but y has {len(y)}")
        if self.regression:
            y = np.ascontiguousarray(y, dtype=config.floatX)
            if y.ndim == 1 and self.y_var.ndim == 2:
                raise ValueError("NeuralNet: regression targets must be 2-D (samples, outputs); reshape y with "
                                 "y.reshape(-1, 1)")
            return y
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise ValueError("NeuralNet: classification targets must be class indices (ints); for real-valued "
                             "targets pass regression=True")
        y = np.ascontiguousarray(y, dtype=self.y_var.dtype)
        if y.ndim == 1:
            k = self._output_layer().output_shape[-1]
            if len(y) and (y.min() < 0 or (k is not None and y.max() >= k)):
                raise ValueError(f"NeuralNet: class labels must be in [0, {k}), got [{y.min()}, {y.max()}]")
        return y

    @staticmethod
    def _n(X) -> int:
        return len(next(iter(X.values()))) if isinstance(X, dict) else len(X)

    def _call_args(self, Xb) -> list:
        if isinstance(Xb, dict):
            return [Xb[lay.name] for lay in self._input_layers()]
        return [Xb]

    # --- training ----------------------------------------------------------------------------------------
    def fit(self, X, y, epochs: int | None = None):
        """Train for max_epochs (or `epochs`) on (X, y); returns self."""
        self.initialize()
        if self.check_input:
            X = self._check_X(X)
            y = self._check_y(y, self._n(X))
        try:
            self.train_loop(X, y, epochs)
        except KeyboardInterrupt:
            pass
        return self

    def partial_fit(self, X, y, classes=None):
        return self.fit(X, y, epochs=1)

    def train_loop(self, X, y, epochs: int | None = None):
        epochs = self.max_epochs if epochs is None else epochs
        X_train, X_valid, y_train, y_valid = self.train_split(X, y, self)
        for func in self.on_training_started:
            func(self, self.train_history_)
        best_train = min((h["train_loss"] for h in self.train_history_), default=np.inf)
        best_valid = min((h["valid_loss"] for h in self.train_history_), default=np.inf)
        epoch = len(self.train_history_)
        bar = _progress(self.verbose)
        for _ in range(epochs):
            epoch += 1
            t0 = time.perf_counter()
            losses, sizes = [], []
            batches = self.batch_iterator_train(X_train, y_train)
            it = bar(batches, total=len(batches), desc=f"epoch {epoch}") if bar else batches
            for batch, (Xb, yb) in enumerate(it, 1):
                loss = float(self.train_iter_(*self._call_args(Xb), yb))
                if not np.isfinite(loss):
                    raise FloatingPointError(self._non_finite(loss, epoch, batch, Xb))
                losses.append(loss)
                sizes.append(self._n(Xb))
                for func in self.on_batch_finished:
                    func(self, self.train_history_)
            v_losses, v_acc, v_sizes = [], [], []
            if self._n(X_valid):
                for Xb, yb in self.batch_iterator_test(X_valid, y_valid):
                    r = self.eval_iter_(*self._call_args(Xb), yb)[:-1]
                    v_losses.append(float(r[0]))
                    if not self.regression:
                        v_acc.append(float(r[1]))
                    v_sizes.append(self._n(Xb))
            train_loss = float(np.average(losses, weights=sizes)) if losses else np.nan
            valid_loss = float(np.average(v_losses, weights=v_sizes)) if v_losses else np.nan
            info = {"epoch": epoch, "train_loss": train_loss, "train_loss_best": train_loss < best_train,
                    "valid_loss": valid_loss, "valid_loss_best": valid_loss < best_valid,
                    "dur": time.perf_counter() - t0}
            if not self.regression:
                info["valid_accuracy"] = float(np.average(v_acc, weights=v_sizes)) if v_acc else np.nan
            for name, fn in self.custom_scores:
                info[name] = float(fn(y_valid, self.predict_proba(X_valid))) if self._n(X_valid) else np.nan
            best_train = min(best_train, train_loss)
            best_valid = min(best_valid, valid_loss) if not np.isnan(valid_loss) else best_valid
            self.train_history_.append(info)
            try:
                for func in self.on_epoch_finished:
                    func(self, self.train_history_)
            except StopIteration:
                break
        for func in self.on_training_finished:
            func(self, self.train_history_)

    # --- prediction --------------------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        self.initialize()
        X = self._check_X(X) if self.check_input else X
        outs = [np.array(self.predict_iter_(*self._call_args(Xb))) for Xb, _ in self.batch_iterator_test(X)]
        return np.concatenate(outs) if outs else np.zeros((0,) + tuple(self._output_layer().output_shape[1:]))

    def predict(self, X) -> np.ndarray:
        p = self.predict_proba(X)
        return p if self.regression else p.argmax(axis=1)

    def score(self, X, y) -> float:
        """Accuracy (classification) or mean squared error (regression)."""
        p = self.predict(X)
        y = np.asarray(y)
        if self.regression:
            return float(np.mean((p - y.reshape(p.shape)) ** 2))
        return float(np.mean(p == y))

    # --- parameters --------------------------------------------------------------------------------------
    def get_all_layers(self) -> list:
        self.initialize_layers() if not hasattr(self, "layers_") else None
        return list(self.layers_.values())

    def _non_finite(self, loss, epoch: int, batch: int, Xb) -> str:
        """Where training went non-finite: the step, the parameters it left non-finite, the inputs."""
        bad = [p.name for p in self.get_all_params() if not np.isfinite(np.asarray(p.get_value())).all()]
        arrays = Xb.values() if isinstance(Xb, dict) else [Xb]
        inputs_bad = any(np.asarray(a).dtype.kind == "f" and not np.isfinite(np.asarray(a)).all() for a in arrays)
        where = (f"non-finite parameters after this step: {', '.join(bad)}" if bad else
                 "every parameter is still finite")
        cause = ("the batch's inputs hold NaN or inf: clean them" if inputs_bad else
                 "lower update_learning_rate")
        return f"NeuralNet: the training loss became {loss} at epoch {epoch}, batch {batch}; {where}; {cause}"

    def get_all_params(self, **tags) -> list:
        return Lyr.get_all_params(self._output_layer(), **tags)

    def get_all_params_values(self) -> OrderedDict:
        """{layer name: [its parameters' values]}."""
        if not hasattr(self, "layers_"):
            self.initialize_layers()
        return OrderedDict((name, [p.get_value() for p in lay.get_params()]) for name, lay in self.layers_.items())

    def load_params_from(self, source) -> None:
        """Parameters from a file written by save_params_to (npz), a dict {layer: [values]} or a
        NeuralNet; a ValueError names the parameter whose shape differs."""
        if not hasattr(self, "layers_"):
            self.initialize_layers()
        if isinstance(source, NeuralNet):
            values = source.get_all_params_values()
        elif isinstance(source, dict):
            values = source
        else:
            values = _read_params(source)
        for name, vals in values.items():
            if name not in self.layers_:
                raise ValueError(f"load_params_from: the network has no layer {name!r}; its layers: "
                                 f"{', '.join(self.layers_)}")
            params = self.layers_[name].get_params()
            if len(params) != len(vals):
                raise ValueError(f"load_params_from: layer {name!r} has {len(params)} parameters, the source "
                                 f"{len(vals)}")
            for p, v in zip(params, vals):
                have = p.get_value(borrow=True).shape
                if np.shape(v) != have:
                    raise ValueError(f"load_params_from: parameter {p.name} of layer {name!r} has shape {have}, the "
                                     f"source's is {np.shape(v)}")
        for name, vals in values.items():
            for p, v in zip(self.layers_[name].get_params(), vals):
                p.set_value(np.asarray(v, dtype=p.dtype))

    def save_params_to(self, path) -> None:
        """Every layer's parameters to the file `path` (npz format, keys `<layer>.<k>`; the name is
        kept as given, as nolearn's: load_params_from(path) reads it back)."""
        arrays = {f"{name}.{k}": v for name, vals in self.get_all_params_values().items() for k, v in enumerate(vals)}
        with open(path, "wb") as fh:  # np.savez(path) would append ".npz" to the name
            np.savez(fh, **arrays)

    def __repr__(self) -> str:
        names = ", ".join(s[0] for s in self._layer_specs)
        return f"NeuralNet(layers=[{names}], update={getattr(self.update, '__name__', self.update)}, " \
               f"max_epochs={self.max_epochs}, regression={self.regression})"


def _read_params(path) -> OrderedDict:
    """{layer: [values]} from a file of save_params_to; a clear error naming the file otherwise."""
    import zipfile
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("it holds one array, not a parameter set")
            values = OrderedDict()
            for key in f.files:
                name, _, k = key.rpartition(".")
                if not name or not k.isdigit():
                    raise ValueError(f"its entry {key!r} is not named <layer>.<index>")
                values.setdefault(name, {})[int(k)] = f[key]
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise ValueError(f"load_params_from: {path} is not a parameter file written by save_params_to "
                         f"(empty, truncated or another format: {e})") from None
    return OrderedDict((n, [d[k] for k in sorted(d)]) for n, d in values.items())


class _Predict:
    """The prediction of the evaluation function, called with a dummy target (class 0 or zeros)."""

    def __init__(self, fn, y, output_shape):
        self.fn, self.y, self.output_shape = fn, y, output_shape
        self._dummy = {}

    def __call__(self, *inputs):
        first = next(iter(inputs))
        n = len(first)
        y = self._dummy.get(n)
        if y is None:
            shape = (n,) if self.y.ndim == 1 else (n, *self.output_shape[1:self.y.ndim])
            y = self._dummy[n] = np.zeros(shape, dtype=self.y.dtype)
        return self.fn(*inputs, y)[-1]


def _as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _progress(verbose):
    """tqdm for a progress bar within each epoch, on a terminal only."""
    if not verbose or not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def bar(it, total, desc):
        return tqdm(it, total=total, desc=desc, leave=False, ncols=80)
    return bar


__all__ = ["BatchIterator", "EarlyStopping", "NeuralNet", "PrintLayerInfo", "PrintLog", "TrainSplit"]
