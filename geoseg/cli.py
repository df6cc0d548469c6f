"""Command line: parses arguments and hands over to the library.

Exit codes: 0 done; 1 the environment failed (disk full, permissions); 2 a mistake to fix (one line on stderr),
or tiles failed after their retries (outputs written); 3 stopped early by ``compute.max_failed_tiles``;
130 / 143 interrupted by SIGINT / SIGTERM (Ray shut down, finished tiles kept for ``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from geoseg import __version__
from geoseg.errors import GeosegError, JobTerminated, raise_job_terminated

if TYPE_CHECKING:
    from geoseg.spec.job import JobSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoseg", description="Whole-region segmentation on Ray -> GeoPackage.")
    parser.add_argument("--version", action="version", version=f"geoseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job spec")
    run.add_argument("job", help="job spec (YAML)")
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument("--resume", action="store_true", help="keep tiles finished by an earlier run of the same job")
    run.add_argument("--address", help="Ray address (e.g. auto, ray://head:10001); default: the spec's, else embedded")
    run.add_argument(
        "--progress",
        choices=["bar", "lines", "off"],
        default="bar",
        help="a progress bar, plain progress lines for logs (what `geoseg status` reads), or none",
    )
    run.add_argument("--no-progress", action="store_const", const="off", dest="progress", help="same as --progress off")
    run.add_argument("--max-items", type=int, help=MAX_ITEMS_HELP)

    sub.add_parser("validate", help="check a job spec").add_argument("job")
    plan = sub.add_parser("plan", help="print the tile grid, tile count and expected memory")
    plan.add_argument("job")
    plan.add_argument("--max-items", type=int, help=MAX_ITEMS_HELP)
    sub.add_parser("schema", help="print the job spec's JSON Schema")

    train = sub.add_parser("train", help="train a U-Net on a job's inputs and a label raster")
    train.add_argument("job", help="job spec (YAML) whose inputs give the pixels")
    train.add_argument("--labels", required=True, help="single-band raster of class values 1..K (0 = ignore)")
    train.add_argument("--out", required=True, help="checkpoint to write (.pt; its sidecar .json goes beside it)")
    train.add_argument("--class-names", help="comma-separated names of classes 1..K (default class_1, ...)")
    train.add_argument("--bands", help="comma-separated bands to train on (default: all bands of the inputs)")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--steps", type=int, default=50, help="steps (batches) per epoch")
    train.add_argument("--patch-size", type=int, default=128)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--depth", type=int, default=3, help="U-Net levels")
    train.add_argument("--width", type=int, default=16, help="U-Net channels at full resolution")
    train.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")

    _cluster_parsers(sub)
    plugin = sub.add_parser("qgis-plugin", help="write the QGIS plugin zip (Plugins > Manage > Install from ZIP)")
    plugin.add_argument("--out", default="geoseg_qgis.zip", help="zip to write (default: geoseg_qgis.zip)")
    plugin.add_argument("--overwrite", action="store_true", help="replace an existing zip")

    models = sub.add_parser("models", help="model weights (SAM, FTW, Delineate Anything): list, download")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="known checkpoints and whether they are cached")
    download = models_sub.add_parser("download", help="download and verify a checkpoint into the cache")
    download.add_argument("name", help="checkpoint name, e.g. vit_b")
    download.add_argument("--url", help="download from this URL instead (a mirror); the sha256 is still checked")
    return parser


def _cluster_parsers(sub: argparse._SubParsersAction) -> None:
    address_help = "the head's dashboard, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS)"
    submit = sub.add_parser("submit", help="run a job spec on a Ray cluster (Ray Jobs API); prints the job id")
    submit.add_argument("job", help="job spec (YAML) whose paths are absolute or URIs; only this file is uploaded")
    submit.add_argument("--address", help=address_help)
    submit.add_argument("--submission-id", help="your own job id (default: one chosen by Ray)")
    submit.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    submit.add_argument("--resume", action="store_true", help="keep tiles finished by an earlier run (same work dir)")
    status = sub.add_parser("status", help="a cluster job's state and tiles done / total")
    logs = sub.add_parser("logs", help="a cluster job's log")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    stop = sub.add_parser("stop", help="stop a cluster job")
    for parser in (status, logs, stop):
        parser.add_argument("id", help="submission id (from `geoseg submit`)")
        parser.add_argument("--address", help=address_help)


def _cmd_submit(args: argparse.Namespace) -> int:
    from geoseg.run.submit import submit_job

    print(
        submit_job(
            args.job, args.address, submission_id=args.submission_id, overwrite=args.overwrite, resume=args.resume
        )
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from geoseg.run.submit import job_state

    state = job_state(args.id, args.address)
    print(state.summary())
    return {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}.get(state.status, 0)


def _cmd_logs(args: argparse.Namespace) -> int:
    from geoseg.run.submit import job_logs

    job_logs(args.id, args.address, follow=args.follow)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from geoseg.run.submit import stop_job

    print(f"{args.id}: {'stopping' if stop_job(args.id, args.address) else 'already ended'}")
    return 0


def _cmd_qgis_plugin(args: argparse.Namespace) -> int:
    from geoseg.qgis_plugin import build_plugin_zip

    print(f"wrote {build_plugin_zip(args.out, overwrite=args.overwrite)}")
    return 0


MAX_ITEMS_HELP = "with inputs.stac_search: refuse a search that finds more items (default: the spec's max_items)"


def _load(args: argparse.Namespace) -> JobSpec:
    """The job spec, with ``--max-items`` (when given) as its STAC search's ``max_items``."""
    from geoseg.errors import SpecError
    from geoseg.spec.job import load_spec

    spec = load_spec(args.job)
    if args.max_items is None:
        return spec
    search = spec.inputs.stac_search
    if search is None:
        raise SpecError("--max-items goes with inputs.stac_search; this job reads no STAC search")
    if args.max_items < 1:
        raise SpecError(f"--max-items must be 1 or more, got {args.max_items}")
    inputs = spec.inputs.model_copy(update={"stac_search": search.model_copy(update={"max_items": args.max_items})})
    return spec.model_copy(update={"inputs": inputs})


def _cmd_run(args: argparse.Namespace) -> int:
    from geoseg.launch import launch_job

    spec = _load(args)
    result = launch_job(
        spec,
        overwrite=args.overwrite,
        resume=args.resume,
        address=args.address,
        progress=args.progress,
    )
    layers = ", ".join(f"{name}: {n}" for name, n in result.outputs.layers.items())
    print(f"wrote {result.outputs.geopackage} ({layers}) in {result.seconds:.1f} s on {result.device}")
    for path in result.outputs.masks + result.outputs.extra:
        print(f"wrote {path}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from geoseg.plan.job import model_infos
    from geoseg.spec.job import load_spec

    spec = load_spec(args.job)
    model_infos(spec)  # what the plan checks of bands and models, without opening the inputs
    print(f"{args.job}: valid ({len(spec.models)} model(s): {', '.join(m.name for m in spec.models)})")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from geoseg.plan.job import describe, plan_job

    print(describe(plan_job(_load(args), with_stats=False)))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from geoseg.spec.job import json_schema

    print(json_schema())
    return 0


def _split_names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _cmd_train(args: argparse.Namespace) -> int:
    from geoseg.spec.job import load_spec
    from geoseg.train import train_unet

    result = train_unet(
        load_spec(args.job),
        args.labels,
        args.out,
        classes=_split_names(args.class_names),
        bands=_split_names(args.bands),
        epochs=args.epochs,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        depth=args.depth,
        width=args.width,
        overwrite=args.overwrite,
        progress=True,
    )
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from geoseg.models import checkpoints

    if args.models_command == "list":
        rows = checkpoints.registry_table()
        for row in rows:
            cached, e = "cached" if row.cached else "-", row.entry
            size = f"{e.size / 2**20:>6.0f} MiB" if e.size is not None else "     ? MiB"
            print(f"{e.name:<20} {e.family:<18} {e.variant:<20} {size}  {cached:<7} {e.license:<14} {e.url}")
        return 0
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("download")
        path = checkpoints.download_checkpoint(
            args.name, url=args.url, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print(json.dumps({"name": args.name, "path": str(path)}))
    return 0


COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "plan": _cmd_plan,
    "schema": _cmd_schema,
    "models": _cmd_models,
    "train": _cmd_train,
    "submit": _cmd_submit,
    "status": _cmd_status,
    "logs": _cmd_logs,
    "stop": _cmd_stop,
    "qgis-plugin": _cmd_qgis_plugin,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoseg`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # GDAL's own error lines (a full disk prints dozens) go to its log: geoseg says one line
        os.environ.setdefault("CPL_LOG", os.devnull)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_job_terminated)
    try:
        return COMMANDS[args.command](args)
    except GeosegError as err:
        print(f"geoseg: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # the environment, not geoseg: disk full, permissions, a file vanished
        if args.verbose:
            raise
        hint = "; free space there and rerun with --resume --overwrite" if err.errno == errno.ENOSPC else ""
        print(f"geoseg: error: {err}{hint} (run with -v for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("geoseg: interrupted; rerun with --resume to keep finished tiles", file=sys.stderr)
        return 130
    except JobTerminated:
        print("geoseg: terminated; rerun with --resume to keep finished tiles", file=sys.stderr)
        return 143


def entry() -> NoReturn:
    """The ``geoseg`` console script and ``python -m geoseg.cli``: :func:`main`, then exit."""
    code = main()
    # Python's exit runs full garbage collections over every object left (~0.4 s after a run); the process ends
    # here, so freeze them instead (in-process callers of main() keep normal collection)
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
