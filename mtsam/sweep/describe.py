"""``--dry-run``: the resolved plan in words (search space, resources, where results go)."""

from __future__ import annotations

from .baselines import baseline_key, template
from .params import param_name
from .plan import SweepPlan
from .sampler import apply_params, corner_points, paper_point, space_params
from .samplers import sampler_label
from .schedulers import describe_scheduler


def describe_plan(plan: SweepPlan) -> str:
    cfg, base = plan.config, plan.base
    s, res = cfg.search, cfg.resources
    model, train = base["model"], base["train"]
    lines = [
        f"sweep '{plan.name}' ({'multi-objective' if plan.pareto else 'single-objective'}): "
        f"{plan.count_text()}, {s.max_concurrent} at a time",
        f"  base run:   {model['variant']} @ {model['image_size'] or 'native'} px, checkpoint "
        f"{model['checkpoint']}, dataset {base['data']['dataset']} ({', '.join(base['data']['tasks'])}), "
        f"{train['epochs']} epochs",
    ]
    objectives = ", ".join(f"{m} ({d})" for m, d in plan.objectives)
    lines.append(f"  sampler:    Optuna {sampler_label(plan)} (seed {s.seed}) on {objectives}")
    lines.append(f"  scheduler:  {describe_scheduler(plan)}")
    point = paper_point(cfg.space, base) if s.paper_point else {}
    if point:
        lines.append(
            "  first:      the paper's setting " + ", ".join(f"{param_name(k)}={v}" for k, v in point.items())
        )
    lines.append("  space:")
    params = space_params(cfg.space, base)
    width = max((len(param_name(p.name)) for p in params), default=10) + 2
    sampled = {p.name for p in params}
    for p in params:  # a condition on a fixed (not sampled) choice is not worth showing
        shown = p.when and p.when[0] in sampled
        cond = f"   if {param_name(p.when[0])} = {'/'.join(map(str, p.when[1]))}" if shown else ""
        lines.append(f"    {param_name(p.name):<{width}}{p.dist.describe()}{cond}")
    if not params:
        lines.append("    (empty: every trial runs the base config)")
    gpu = f", {res.gpu:g} GPU" if res.gpu else ", no GPU"
    if 0 < res.gpu < 1:
        gpu += " (CUDA memory capped at that share)" if res.gpu_memory == "share" else " (memory not capped)"
    where = cfg.ray.address or f"local, {cfg.ray.num_cpus or 'all'} CPUs"
    precision = train.get("precision", "auto")
    note = " (bf16 on CUDA)" if precision == "auto" else ""
    if res.workers == 1:
        lines.append(f"  resources:  {res.cpu:g} CPU{gpu} per trial; Ray {where}")
    else:
        lines += _worker_lines(plan, gpu, where)
    lines.append(f"  device:     train.device {train.get('device', 'auto')}, precision {precision}{note}")
    lines += _memory_lines(plan)
    if plan.baseline_mode == "auto":
        key = baseline_key(
            template(base, cfg.baselines.adapter.model_dump(mode="json") if cfg.baselines.adapter else None)
        )
        lines.append(
            f"  baselines:  single-task runs per task, cached in MLflow under key {key} "
            f"(trained now where missing)"
        )
    else:
        lines.append(
            f"  baselines:  {'given in base.baseline' if plan.baseline_mode == 'inline' else 'none'}"
        )
    lines += [
        f"  results:    Ray {plan.exp_path}",
        f"              MLflow {plan.tracking_uri} (experiment '{plan.name}')",
        f"              Optuna {plan.study_location} (study '{plan.name}')",
        f"  retries:    {cfg.max_failures} per trial from its last checkpoint",
    ]
    return "\n".join(lines)


def _worker_lines(plan: SweepPlan, gpu: str, where: str) -> list[str]:
    """A data-parallel trial: its workers, what it reserves, the global batch."""
    from .workers import DRIVER_CPU, trial_reservation

    res, data, train = plan.config.resources, plan.base["data"], plan.base["train"]
    need = trial_reservation(res.workers, res.cpu, res.gpu)
    batch = data["batch_size"] * res.workers * train.get("grad_accum", 1)
    at_once = plan.config.search.max_concurrent
    return [
        f"  resources:  {res.workers} workers per trial (Ray Train, {'nccl' if res.gpu else 'gloo'}), "
        f"{res.cpu:g} CPU{gpu} per worker; Ray {where}",
        f"              a trial reserves {need['CPU']:g} CPU and {need['GPU']:g} GPU together "
        f"(its workers as one placement group + {DRIVER_CPU:g} CPU for the trial itself); "
        f"{at_once} at a time reserve up to {need['CPU'] * at_once:g} CPU, {need['GPU'] * at_once:g} GPU",
        f"              global batch {batch} = batch_size {data['batch_size']} × {res.workers} workers "
        f"× grad_accum {train.get('grad_accum', 1)}",
        *_local_fit(plan),
    ]


def _local_fit(plan: SweepPlan) -> list[str]:
    from .workers import trials_that_fit

    res, ray_cfg = plan.config.resources, plan.config.ray
    if ray_cfg.address not in (None, "local") or ray_cfg.num_cpus is None:
        return []
    fit = trials_that_fit({"CPU": ray_cfg.num_cpus, "GPU": _local_gpus()}, res.workers, res.cpu, res.gpu)
    if fit == 0:
        return [
            f"              the local Ray ({ray_cfg.num_cpus} CPUs) cannot hold one such trial "
            "(raise ray.num_cpus)"
        ]
    at_once = min(fit, plan.config.search.max_concurrent)
    return [f"              the local Ray ({ray_cfg.num_cpus} CPUs) runs {at_once} such trials at a time"]


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _memory_lines(plan: SweepPlan, most: int = 8) -> list[str]:
    """Estimated peak training memory of the base config, the paper point and the space's corners."""
    from mtsam.config import validate_config
    from mtsam.memory_plan import plan_lines, trial_capacity

    cfg, base = plan.config, plan.base
    res = cfg.resources
    cuda = res.gpu > 0 or base["train"].get("device") == "cuda"
    points = [{}, paper_point(cfg.space, base) if cfg.search.paper_point else {}]
    points += list(corner_points(cfg.space, base))
    configs = [validate_config(apply_params(base, p)) for p in points]
    capacity = trial_capacity(res.gpu_memory_gb, res.gpu, res.gpu_memory == "share")
    shown = plan_lines(configs, "cuda" if cuda else "cpu", capacity)
    where = "per trial on CUDA" if cuda else "per trial on the CPU"
    if cuda and capacity is None:
        where += " (set resources.gpu_memory_gb to check that trials fit)"
    elif capacity is not None:
        where += f", {capacity / 1e9:g} GB each"
    out = [f"  memory:     estimated peak {where}:"]
    out += [f"    {line}" for line in shown[:most]]
    if len(shown) > most:
        out.append(f"    ... and {len(shown) - most} more")
    return out


def describe_existing(plan: SweepPlan, status: str, next_name: str | None) -> str:
    """What is already at the sweep's place: its state, its study's trials, and what a run would do."""
    from collections import Counter

    lines = [f"  existing:   sweep '{plan.name}' ({status}) at {plan.state_dir}"]
    if plan.study_path.is_file():
        import optuna

        from .study import study_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=plan.name, storage=study_storage(plan.study_path))
            states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
            counted = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet"
            lines.append(f"              Optuna trials: {counted}")
        except (KeyError, ValueError):
            lines.append(f"              no study '{plan.name}' in {plan.study_path}")
    if next_name:
        lines.append(
            f"  a run now:  starts a new sweep '{next_name}' (--name to choose)"
            + ("" if status == "finished" else f"; --resume continues '{plan.name}'")
        )
    elif status == "finished":
        lines.append("  a run now:  refuses (finished; start another with --name NEW)")
    else:
        lines.append("  a run now:  refuses; --resume continues it")
    return "\n".join(lines)
