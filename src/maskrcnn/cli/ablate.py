"""`maskrcnn ablate TABLE`: one of the paper's Table 2 ablations reproduced in small
(`maskrcnn.experiments`). Every row's config is loaded (and so checked) before torch is imported,
so that a misspelt override or a row the config cannot express fails at once."""

import argparse

from maskrcnn.cli import options
from maskrcnn.cli.checks import Number, WholeNumber


def add(subcommands) -> argparse.ArgumentParser:
    from maskrcnn.experiments.tables import TABLES, table_names

    parser = subcommands.add_parser(
        "ablate",
        help="reproduce a table of the paper's ablations (Table 2) in small, on the shapes dataset",
        description=(
            "Train and evaluate every row of one of the paper's Table 2 ablations on the built-in "
            "shapes dataset, each row with the same seeds and the same budget, and print the table: "
            "our mask AP, AP50, AP75 and box AP beside the paper's, and whether each row's change "
            "from the baseline row goes the paper's way. Writes, in --out, table.md, table.csv, "
            "ablation.json and a run folder per row and seed (<row>/seed<k>), after every run; the "
            "same command again skips the finished runs and continues a stopped one. Exit code 1 "
            "if some row failed (the others ran), 2 if nothing could run."
        ),
    )
    parser.add_argument("table", metavar="TABLE", help=f"the table: {table_names()}")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every row, before or after the options, e.g. "
        "solver.precision=bf16 (a row's own settings win over them)",
    )
    rows = "; ".join(f"{key}: {','.join(r.name for r in t.rows)}" for key, t in TABLES.items())
    parser.add_argument(
        "--rows",
        metavar="NAMES",
        help=f"run only these rows, comma-separated ({rows}; default: all the table's rows)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder, created if missing (default: runs/ablate-TABLE, e.g. runs/ablate-2c)",
    )
    parser.add_argument(
        "--data",
        default="data/shapes",
        metavar="DIR",
        help="the shapes dataset; written there (as make-shapes: 1000 training, 100 validation "
        "images) when the folder holds none",
    )
    parser.add_argument(
        "--config",
        default="shapes",
        metavar="CONFIG",
        help="the config the rows change: a YAML file or a built-in config's name",
    )
    parser.add_argument(
        "--budget-minutes",
        type=Number(0.1, 100000),
        metavar="M",
        help="fit each run (one row, one seed) to M minutes of wall time, set-up and final "
        "evaluation included (default: 10, unless --max-iter is given)",
    )
    parser.add_argument(
        "--max-iter",
        "--iters",
        dest="max_iter",
        type=WholeNumber(1),
        metavar="N",
        help="train each run for N iterations instead of on a time budget, the same for every row "
        "(as train's --max-iter; default: a budget)",
    )
    parser.add_argument(
        "--seeds",
        type=WholeNumber(1, 100),
        default=1,
        metavar="N",
        help="train each row with seeds 0..N-1; the table shows means and standard deviations",
    )
    options.add_device(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out that holds an ablation, instead of continuing it (or refusing, "
        "when its settings differ)",
    )
    return parser


def check(args: argparse.Namespace) -> None:
    """args.plan: the checked `experiments.plan.Plan`; ConfigError or OptionError naming the
    option, the row or the config key."""
    from maskrcnn.experiments.plan import check_ablation

    rows = None if args.rows is None else [name.strip() for name in args.rows.split(",") if name.strip()]
    args.plan = check_ablation(
        args.table,
        list(args.overrides),
        rows,
        args.out,
        args.data,
        args.config,
        args.budget_minutes,
        args.max_iter,
        args.seeds,
        args.device,
        args.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    """0 every row done, 1 some row failed (the others ran)."""
    from maskrcnn.experiments.runs import run_ablation

    return run_ablation(args.plan)
