"""The learned cost model: gradient-boosted trees (LightGBM) on the candidates' features, trained
online on every successful measurement of the run, as TVM's XGBoost model is.

    model = CostModel.make()             # None when LightGBM is not installed (the `tune` extra)
    model.fit(X, seconds)
    model.predict(X)                     # higher is faster: the predicted -log(seconds)

Why LightGBM: it is well kept (Microsoft, releases every few months), light (one wheel of a few
MB, numpy and scipy only), fast on a few hundred rows, and handles the tiny, growing training
sets of a tuning run when its leaf minimums are lowered (min_child_samples=2). XGBoost, TVM's
choice, is as good a model, but its default wheel pulls in a CUDA runtime of hundreds of MB.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

MIN_SAMPLES = 6  # successful trials before the model guides the search


class CostModel:
    def __init__(self, lgb, seed: int = 0) -> None:
        self._lgb = lgb
        self.seed = seed
        self.model = None
        self.trained_on = 0

    @staticmethod
    def make(seed: int = 0) -> CostModel | None:
        try:
            import lightgbm
        except ImportError:
            return None
        return CostModel(lightgbm, seed)

    def fit(self, X, seconds) -> bool:
        """Train on (features, seconds) of successful trials; False while there are too few."""
        if len(X) < MIN_SAMPLES:
            return False
        y = np.array([-math.log(s) for s in seconds])
        y = y - y.max()  # 0 for the fastest: the scale of the workload does not matter
        params = {"objective": "regression", "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 2,
                  "min_data_in_bin": 1, "bagging_fraction": 0.9, "bagging_freq": 1, "feature_fraction": 0.9,
                  "num_threads": 1, "seed": self.seed, "verbosity": -1, "deterministic": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = self._lgb.Dataset(np.asarray(X, dtype=np.float64), y, params={"min_data_in_bin": 1,
                                                                                 "verbosity": -1})
            self.model = self._lgb.train(params, data, num_boost_round=80)
        self.trained_on = len(X)
        return True

    def predict(self, X) -> np.ndarray:
        if self.model is None or not len(X):
            return np.zeros(len(X))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.predict(np.asarray(X, dtype=np.float64))


__all__ = ["MIN_SAMPLES", "CostModel"]
