"""``MultiObjectiveASHA``: asynchronous successive halving for Pareto sweeps (a Ray Tune scheduler).

Ray Tune's schedulers and Optuna's pruners compare trials on one scalar, so until now a Pareto
sweep ran every trial for its whole budget (FIFO). This one keeps ASHA's asynchronous rungs
(grace · ηᵏ epochs below the budget) and replaces "is it in the top 1/η by the metric" with the
multi-objective order of the MO-ASHA literature (Schmucker et al., 2021: non-dominated sorting,
ties broken by crowding distance, as in NSGA-II): when a trial reaches a rung it is ranked among
every trial recorded there so far, first by its non-dominated front, then by crowding distance
inside that front (the boundary points of a front first); it continues if its position is within
the best ⌈n/η⌉ of the n recorded, else it is stopped. A lone trial at a rung always continues,
so the first trials are never stopped for lack of company (as in ASHA).

Objectives come from the sweep (``plan.objectives``: names + max/min). A result missing an
objective, or with a non-finite one, ranks last. Stops go through Tune as ASHA's do, so the
searcher marks the trial PRUNED and the MLflow tracker ``stopped_early``.
"""

from __future__ import annotations

import math
import pickle

from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The epochs at which trials are compared: ⌈grace · ηᵏ⌉ below ``max_t`` (ASHA's milestones)."""
    rungs, milestone = [], float(grace_period)
    while milestone < max_t:
        rungs.append(math.ceil(milestone))
        milestone *= reduction_factor
    return sorted(set(rungs))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` dominates ``b`` (every entry is a loss: lower is better)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_fronts(points: list[tuple[float, ...]]) -> list[list[int]]:
    """Indices of ``points`` by non-dominated front (front 0 = the Pareto set); fine for a rung's size."""
    remaining, fronts = set(range(len(points))), []
    while remaining:
        front = sorted(i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining))
        fronts.append(front)
        remaining -= set(front)
    return fronts


def crowding_distance(points: list[tuple[float, ...]], front: list[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each member of ``front`` (∞ at each objective's extremes)."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for k in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: points[i][k])
        low, high = points[ordered[0]][k], points[ordered[-1]][k]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for prev, cur, nxt in zip(ordered, ordered[1:], ordered[2:]):
            distance[cur] += (points[nxt][k] - points[prev][k]) / (high - low)
    return distance


def mo_order(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of ``points`` best first: by front, then by crowding distance (larger first), then index."""
    order = []
    for front in non_dominated_fronts(points):
        distance = crowding_distance(points, front)
        order += sorted(front, key=lambda i: (-distance[i], i))
    return order


class MultiObjectiveASHA(FIFOScheduler):
    def __init__(
        self,
        objectives: list[tuple[str, str]],
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 2.0,
        time_attr: str = "epoch",
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("MultiObjectiveASHA needs at least one objective")
        self.objectives = [(m, d) for m, d in objectives]
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self.time_attr = time_attr
        self.rungs = rung_epochs(grace_period, reduction_factor, max_t)
        self._recorded: dict[int, dict[str, tuple[float, ...]]] = {r: {} for r in self.rungs}
        self.num_stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives come with the constructor (the sweep's plan)

    def _loss(self, result: dict) -> tuple[float, ...]:
        """The objectives as losses (max → negated); a missing or non-finite value is the worst."""
        out = []
        for metric, direction in self.objectives:
            value = result.get(metric)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            out.append((-value if direction == "max" else value) if ok else math.inf)
        return tuple(out)

    def _decide(self, trial_id: str, result: dict) -> str:
        epoch = result.get(self.time_attr)
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        for rung in reversed(self.rungs):  # the highest rung reached and not yet recorded
            if epoch < rung or trial_id in self._recorded[rung]:
                continue
            recorded = self._recorded[rung]
            recorded[trial_id] = self._loss(result)
            ids = list(recorded)
            order = mo_order([recorded[i] for i in ids])
            keep = max(1, math.ceil(len(ids) / self.reduction_factor))
            position = order.index(ids.index(trial_id))
            return TrialScheduler.CONTINUE if position < keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = self._decide(trial.trial_id, result)
        if action == TrialScheduler.STOP:
            self.num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result:  # record it at its rung, so later trials are compared with it (as ASHA does)
            self._decide(trial.trial_id, result)

    def debug_string(self) -> str:
        sizes = ", ".join(f"epoch {r}: {len(self._recorded[r])}" for r in self.rungs)
        return f"MultiObjectiveASHA: {self.num_stopped} stopped; recorded per rung {sizes}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
