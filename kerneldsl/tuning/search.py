"""Search strategies: which candidates to measure next.

    s = make_strategy("evolutionary", space, seed=0)
    batch = s.propose(8)                 # [(point, Config)], legal and never proposed before
    s.update([(point, seconds or None), ...])

`random` draws points uniformly. `evolutionary` (TVM MetaSchedule's evolutionary search) keeps
the fastest measured points as parents, breeds children by mutation (one or two choices
changed) and crossover (each choice from either parent), adds as many fresh random points,
evolves them for a few generations on the cost model's predictions (no measurement), and
measures the points the model ranks best, plus a few random ones (epsilon-greedy) so that a
wrong model cannot trap the search.
Until the model has seen enough successful trials (or without LightGBM) it measures mutations
of the best points and random points. Both strategies measure the default point first.
"""

from __future__ import annotations

import random

from ..errors import ScheduleError
from .cost_model import CostModel
from .features import features


class Strategy:
    name = "base"

    def __init__(self, space, seed: int = 0) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.seen: set = set()
        self.measured: dict = {}  # point -> seconds (None: failed)
        self.rejected = 0  # points the primitives refused (never built)

    def _realize(self, point):
        if point in self.seen:
            return None
        self.seen.add(point)
        try:
            return self.space.config(point)
        except ScheduleError:
            self.rejected += 1
            return None

    def _random_fill(self, out: list, n: int, tries: int = 2000) -> None:
        for _ in range(tries):
            if len(out) >= n:
                return
            p = self.space.random_point(self.rng)
            cfg = self._realize(p)
            if cfg is not None:
                out.append((p, cfg))

    def _first(self, out: list) -> None:
        if not self.seen:
            p = self.space.default_point()
            cfg = self._realize(p)
            if cfg is not None:
                out.append((p, cfg))

    def propose(self, n: int) -> list:
        out: list = []
        self._first(out)
        self._random_fill(out, n)
        return out

    def update(self, results) -> None:
        for point, seconds in results:
            self.measured[point] = seconds

    def exhausted(self) -> bool:
        return len(self.seen) >= self.space.size


class RandomSearch(Strategy):
    name = "random"


class EvolutionarySearch(Strategy):
    name = "evolutionary"

    def __init__(self, space, seed: int = 0, population: int = 192, generations: int = 3, parents: int = 8,
                 epsilon: float = 0.15) -> None:
        super().__init__(space, seed)
        self.model = CostModel.make(seed)
        self.population, self.generations, self.parents, self.epsilon = population, generations, parents, epsilon
        self._features: dict = {}

    def _feat(self, point):
        f = self._features.get(point)
        if f is None:
            f = self._features[point] = features(self.space, point)
        return f

    def update(self, results) -> None:
        super().update(results)
        if self.model is not None:
            ok = [(p, s) for p, s in self.measured.items() if s is not None]
            self.model.fit([self._feat(p) for p, _ in ok], [s for _, s in ok])

    def _mutate(self, point) -> tuple:
        p = list(point)
        for _ in range(self.rng.choice((1, 1, 2))):
            k = self.rng.randrange(len(p))
            n = len(self.space.dims[k].values)
            if n > 1:
                p[k] = self.rng.choice([i for i in range(n) if i != p[k]])
        return tuple(p)

    def _cross(self, a, b) -> tuple:
        return tuple(x if self.rng.random() < 0.5 else y for x, y in zip(a, b))

    def _children(self, parents: list, n: int) -> list:
        out = []
        if not parents:  # every point of a small space measured: nothing to breed from
            return out
        for _ in range(n):
            r = self.rng.random()
            if r < 0.6 or len(parents) < 2:
                out.append(self._mutate(self.rng.choice(parents)))
            elif r < 0.9:
                out.append(self._cross(*self.rng.sample(parents, 2)))
            else:
                out.append(self.space.random_point(self.rng))
        return out

    def propose(self, n: int) -> list:
        out: list = []
        self._first(out)
        good = sorted((s, p) for p, s in self.measured.items() if s is not None)
        parents = [p for _, p in good[:self.parents]]
        if not parents:
            self._random_fill(out, n)
            return out
        guided = self.model is not None and self.model.model is not None
        n_random = max(1, round(self.epsilon * n)) if guided else n // 2
        want = n - n_random
        pool = [c for c in self._children(parents, self.population) if c not in self.seen]
        if guided:
            # fresh random points compete with the parents' children on the model's ranking (TVM
            # seeds its population the same way): far from the incumbents the model may know better
            pool += [p for p in (self.space.random_point(self.rng) for _ in range(self.population))
                     if p not in self.seen]
            for _ in range(self.generations):  # evolve on predictions: no measurement
                pool = list(dict.fromkeys(pool))
                if not pool:
                    break
                scores = self.model.predict([self._feat(c) for c in pool])
                ranked = [c for _, c in sorted(zip(scores, pool), key=lambda t: -t[0])]
                elite = ranked[:max(8, self.population // 4)]
                pool = elite + [c for c in self._children(elite, self.population) if c not in self.seen]
            pool = list(dict.fromkeys(pool))
            if pool:
                scores = self.model.predict([self._feat(c) for c in pool])
                pool = [c for _, c in sorted(zip(scores, pool), key=lambda t: -t[0])]
        else:
            self.rng.shuffle(pool)
        for c in pool:
            if len(out) >= want:
                break
            cfg = self._realize(c)
            if cfg is not None:
                out.append((c, cfg))
        self._random_fill(out, n)
        return out


STRATEGIES = {"random": RandomSearch, "evolutionary": EvolutionarySearch}


def make_strategy(name: str, space, seed: int = 0) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, seed)


__all__ = ["STRATEGIES", "EvolutionarySearch", "RandomSearch", "Strategy", "make_strategy"]
