"""``python -m mtsam.train``: one MTSAM training run (the embedded default without --config)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cli_common import Parser, run_cli
from .config import load_config
from .errors import ConfigError


def build_parser() -> Parser:
    p = Parser(prog="python -m mtsam.train", description=__doc__)
    p.add_argument("--config", help="run config YAML (default: the embedded tiny-scenes default)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--out", help="run directory (default: runs/train-<time>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.lr=3e-4 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--dry-run", action="store_true", help="build the model, print its summary and stop")
    p.add_argument("--json", action="store_true", help="machine-readable output (summary as JSON)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main_args(args) -> int:
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_config(args.config, overrides)
    if args.dry_run:
        return dry_run(config, args.json)

    from .console import epoch_table, parameter_table, summary_text, trivial_table
    from .trainer import CHECKPOINT, Trainer

    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    resume_from = None
    if args.resume:
        if not (out / CHECKPOINT).is_file():
            raise ConfigError(f"--resume: no checkpoint to resume in {out} (give the run's --out)")
        resume_from = out / CHECKPOINT
    elif (out / CHECKPOINT).exists():
        raise ConfigError(f"--out: {out} already holds a run (use --resume or another directory)")

    def show(record, trainer) -> None:
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(epoch_table(record, trainer.tasks), flush=True)

    trainer = Trainer(
        config, out, callbacks=[show], resume_from=resume_from, progress=sys.stderr.isatty() and not args.json
    )
    trivial = trainer.trivial  # once per run: the floor every epoch's metrics are read against
    if args.json:
        print(json.dumps({"trivial": trivial}), flush=True)
    else:
        print(parameter_table(trainer.model.parameter_summary()))
        print("trivial predictors (constants from training-split statistics):")
        split = "val" if trainer.has_val else "test"  # data.val_fraction = 0: no validation split
        print(trivial_table(trivial, trainer.tasks, split=split), flush=True)
    summary = trainer.fit()
    if args.json:
        print(json.dumps({"summary": summary}, default=str))
    else:
        print(summary_text(summary, trainer.tasks))
    return 0


def dry_run(config, as_json: bool) -> int:
    """The model's parameters, encoder layout and estimated peak training memory; checks the fit
    when training would run on a visible GPU."""
    import torch

    from .device import pick_device
    from .factory import build_model
    from .memory_plan import GIB, estimate_for_config, fit_check

    model = build_model(config)
    summary, layout = model.parameter_summary(), model.encoder_layout()
    device = pick_device(config.train.device)
    memory = {d: estimate_for_config(config, d) for d in ("cuda", "cpu")}
    problem = None
    if device.type == "cuda":
        problem = fit_check(config, torch.cuda.get_device_properties(device).total_memory)
    if as_json:
        doc = {
            "parameters": summary,
            "encoder": layout,
            "memory": {d: e.as_dict() for d, e in memory.items()},
        }
        print(json.dumps({**doc, "fits": problem is None, "memory_problem": problem}))
        return 0
    from .console import parameter_table

    print(parameter_table(summary))
    branch = layout["branch_block"]
    print(
        f"encoder: {layout['depth']} blocks, adapters on {_blocks_text(layout['adapted_blocks'])}, "
        + ("no task branch (one pass per image)" if branch is None else f"tasks branch at block {branch}")
        + (
            f", {layout['graph_free_blocks']} leading blocks without autograd"
            if layout["graph_free_blocks"]
            else ""
        )
    )
    print(f"memory (cuda): {memory['cuda'].describe()}")
    print(f"memory (cpu):  {memory['cpu'].describe()}")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        print(f"fit on this GPU ({total:.1f} GiB): " + (problem or "fits"))
    return 0


def _blocks_text(blocks: list[int]) -> str:
    if not blocks:
        return "no blocks"
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"blocks {blocks[0]}-{blocks[-1]}" if len(blocks) > 1 else f"block {blocks[0]}"
    return "blocks " + ",".join(map(str, blocks))


def main(argv=None) -> int:
    return run_cli(main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
