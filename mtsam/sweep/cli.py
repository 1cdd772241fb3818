"""``python tune/search.py``: run, resume or dry-run a sweep.

Errors a user can fix print one line ``error: <message>`` on stderr and exit 2 (``--debug``: traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtsam.errors import MTSAMError

QUICKSTART_FILE = Path(__file__).resolve().parents[2] / "tune" / "configs" / "quickstart.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune/search.py",
        description="Hyperparameter search for MTSAM with Ray Tune + Optuna, tracked in MLflow.",
        epilog="--set takes any sweep-config field by its dotted path: sweep fields (search.num_samples=4, "
        "scheduler.type=fifo, resources.gpu=0.5) and run-config fields under base. "
        "(base.train.lr=1e-3, base.model.image_size=512). Values are YAML.",
    )
    p.add_argument(
        "--config", help="sweep YAML (default: tune/configs/quickstart.yaml, the embedded quickstart)"
    )
    p.add_argument("--name", help="sweep name: MLflow experiment and Ray experiment folder")
    p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--epochs", type=int, help="epochs per trial (base.train.epochs)")
    p.add_argument("--max-concurrent", type=int, help="trials running at the same time")
    p.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<storage>/mlflow.db)")
    p.add_argument(
        "--storage", help="where Ray writes trials and checkpoints: a path, NFS mount or s3:// URI"
    )
    p.add_argument(
        "--address", help="join an existing Ray cluster ('auto' on a cluster node); default: local"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (same config and flags)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def overrides(args: argparse.Namespace) -> list[str]:
    """Flags become --set overrides (applied after the explicit ones, so flags win)."""
    flags = {
        "name": args.name,
        "search.num_samples": args.num_samples,
        "base.train.epochs": args.epochs,
        "search.max_concurrent": args.max_concurrent,
        "tracking_uri": args.tracking_uri,
        "storage": args.storage,
        "ray.address": args.address,
    }
    return list(args.set) + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


def name_given(args: argparse.Namespace) -> bool:
    """The user named the sweep on the command line (then an existing one is an error, not renamed)."""
    return args.name is not None or any(s.split("=", 1)[0].strip() == "name" for s in args.set)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .config import load_sweep_config
        from .plan import make_plan
        from .runner import preflight
        from .state import existing_status, next_free_name

        config = args.config or (str(QUICKSTART_FILE) if QUICKSTART_FILE.is_file() else None)
        cfg, config_file = load_sweep_config(config, overrides(args))
        plan = make_plan(cfg, config_file)
        existing = existing_status(plan.state_dir) if not args.resume else None
        if args.dry_run:
            from .describe import describe_existing, describe_plan

            preflight(plan, resume=args.resume, check_gpus=False, fresh=False)
            next_name = next_free_name(plan) if existing and not name_given(args) else None
            print(describe_plan(plan))
            if existing:
                print(describe_existing(plan, existing, next_name))
            return 0
        if existing and not name_given(args):
            # the same command again (`make demo` twice): a new numbered sweep, said in one line
            old, new = plan.name, next_free_name(plan)
            plan = make_plan(*load_sweep_config(config, [*overrides(args), f"name={json.dumps(new)}"]))
            hint = "" if existing == "finished" else f"; continue the interrupted '{old}' with --resume"
            print(
                f"sweep '{old}' already {existing} at {plan.state_dir.with_name(old)}: starting "
                f"'{new}' (choose the name with --name{hint})",
                flush=True,
            )
        preflight(plan, args.resume, check_gpus=True)
        from .report import summary_text
        from .runner import run_sweep

        result = run_sweep(plan, resume=args.resume)
        print(summary_text(result, plan), flush=True)
        return 0
    except MTSAMError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug or an infrastructure failure: one line unless --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()
        print(
            f"error: {type(exc).__name__}: {text[0] if text else ''} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
