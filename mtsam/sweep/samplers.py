"""The Optuna sampler a sweep names (``search.sampler``), and the combinations it refuses.

``auto`` is TPE for one objective and NSGA-II for a Pareto sweep (random under PBT/PB2, which
mutate trials themselves, so Optuna only draws the first population). Every sampler gets
``search.seed``. Checks run in ``make_plan``: a bad combination fails with one line before any
trial starts (``--dry-run`` included).

Extra packages: ``cmaes`` needs the ``cmaes`` package (a project dependency for this reason);
``gp`` needs scipy and torch (both already required).
"""

from __future__ import annotations

import warnings

from mtsam.errors import ConfigError

from .params import param_name
from .sampler import space_params

LABELS = {
    "tpe": "TPE",
    "random": "random",
    "qmc": "QMC (Sobol)",
    "cmaes": "CMA-ES",
    "gp": "GP",
    "nsga2": "NSGA-II",
    "nsga3": "NSGA-III",
}
MULTI_ONLY = ("nsga2", "nsga3")
SINGLE_ONLY = ("cmaes",)
POPULATION_SAMPLERS = ("random", "qmc")  # what PBT / PB2 accept for their first population


def sampler_name(plan) -> str:
    name = plan.config.search.sampler
    if name != "auto":
        return name
    if plan.config.scheduler.type in ("pbt", "pb2"):
        return "random"
    return "nsga2" if plan.pareto else "tpe"


def sampler_label(plan) -> str:
    name = sampler_name(plan)
    if name == "tpe" and plan.config.search.multivariate:
        return "TPE (multivariate, grouped)"
    return LABELS[name]


def check_sampler(plan) -> None:
    """Refuse what cannot work, with one line naming the field."""
    search, name = plan.config.search, sampler_name(plan)
    if name in MULTI_ONLY and not plan.pareto:
        raise ConfigError(
            f"search.sampler: {name} is a multi-objective sampler (search.mode: pareto); a single-objective "
            "sweep uses tpe, random, qmc, cmaes or gp"
        )
    if name in SINGLE_ONLY and plan.pareto:
        raise ConfigError(
            f"search.sampler: {name} optimises one objective; a pareto sweep uses nsga2, nsga3, tpe, gp, "
            "random or qmc"
        )
    if search.multivariate and name != "tpe":
        raise ConfigError(f"search.multivariate: applies to search.sampler tpe only, got sampler {name}")
    if name == "cmaes":
        params = space_params(plan.config.space, plan.base)
        categorical = [p for p in params if p.dist.is_choice and len(p.dist.choice) > 1]
        if categorical:
            p = categorical[0]
            raise ConfigError(
                f"search.sampler: cmaes samples numeric ranges only, but the space has the categorical "
                f"{param_name(p.name)} ({p.dist.describe()}); use tpe, or give it a fixed value"
            )
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("search.sampler: cmaes needs the 'cmaes' package (pip install cmaes)") from None
    scheduler = plan.config.scheduler.type
    if scheduler in ("pbt", "pb2") and name not in POPULATION_SAMPLERS:
        raise ConfigError(
            f"search.sampler: {scheduler} mutates the trials' hyperparameters while they train, so Optuna "
            f"only draws the first population: use random or qmc (or auto), got {name}"
        )


def build_sampler(plan):
    """The Optuna sampler of the plan, seeded with ``search.seed``."""
    import optuna

    search, name = plan.config.search, sampler_name(plan)
    seed, n = search.seed, search.num_samples
    startup = max(3, min(10, n // 3))
    population = max(4, min(50, n // 2))
    with warnings.catch_warnings():  # several are "experimental" in Optuna, still the documented way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            multi = search.multivariate
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=multi, group=multi
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "qmc":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
            )
        quiet = {"warn_independent_sampling": False}
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, **quiet)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, **quiet)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population)
