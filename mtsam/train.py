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
        from .factory import build_model

        summary = build_model(config).parameter_summary()
        if args.json:
            print(json.dumps({"parameters": summary}))
        else:
            from .console import parameter_table

            print(parameter_table(summary))
        return 0

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
        print(trivial_table(trivial, trainer.tasks, split="val"), flush=True)
    summary = trainer.fit()
    if args.json:
        print(json.dumps({"summary": summary}, default=str))
    else:
        print(summary_text(summary, trainer.tasks))
    return 0


def main(argv=None) -> int:
    return run_cli(main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
