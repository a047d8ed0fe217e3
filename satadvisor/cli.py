"""The ``satadvisor`` command: parses options, calls the library, prints. The only place that exits.

Heavy imports (torch) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import click

from satadvisor._io import plain_folder_name
from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import OutputError, SatAdvisorError, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
BAR_WIDTH = 30


class _Fail(click.ClickException):
    """A one-line error on stderr and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"satadvisor: error: {self.format_message()}", err=True)


class _HeldWarnings:
    """The warnings of one command, each as one line on stderr: satadvisor's own at once;
    other libraries' (torch, PIL, the model file…) held, shown when the command succeeds and
    dropped when it ends in an error line (which then stands alone)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def show(self) -> None:
        for line in dict.fromkeys(self.lines):  # once each, in order
            click.echo(line, err=True)
        self.lines.clear()

    def showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        """A :func:`warnings.showwarning` replacement, installed for the command only."""
        parts = filename.replace("\\", "/").split("/")
        if "satadvisor" in parts:
            click.echo(f"satadvisor: warning: {message}", err=True)
            return
        text = str(message).strip().splitlines()
        where = "/".join(parts[-2:])
        self.lines.append(
            f"satadvisor: warning: {text[0] if text else ''} ({category.__name__}, {where}:{lineno})"
        )


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one line and exit code 2 (the traceback only with --debug);
    warnings are shown as :class:`_HeldWarnings` says while the command runs (the process's
    warning display and filters are put back afterwards)."""
    import warnings

    held = _HeldWarnings()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = held.showwarning
            yield
    except SatAdvisorError as exc:
        if debug:
            held.show()
            raise
        raise _Fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    except KeyboardInterrupt:
        click.echo("satadvisor: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug or not _out_of_memory(exc):
            held.show()
            raise
        raise _Fail(
            "out of device memory; pass a smaller --batch-size or --resolution, or --device cpu"
        ) from exc
    held.show()


@contextmanager
def _stdout_kept_for(as_json: bool) -> Iterator[Any]:
    """With ``--json``, what the model file prints goes to stderr while the command runs, so
    stdout holds the JSON alone; yields the real stdout to print it to."""
    stdout = sys.stdout
    if not as_json:
        yield stdout
        return
    with redirect_stdout(sys.stderr):
        yield stdout


def _out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, checked without importing torch (it is loaded when it ran)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


class _Interrupts:
    """Ctrl-C outside the search: the first one stops the command at its next checkpoint.

    A KeyboardInterrupt raised wherever the main thread happens to be can be swallowed (in a
    weakref callback or ``__del__``: the command then runs on and exits 0), or pass through an
    import (Python then kills itself with SIGINT at exit, exit code -2, whatever the command
    chose). So, as in the search (``satadvisor.search._signals``), the first SIGINT only sets a
    flag; :meth:`checkpoint` (each training step, between the phases of a command, at the end)
    raises KeyboardInterrupt there, which :func:`_errors` turns into exit 130. A second SIGINT
    raises at once. A handler other than Python's default (SIGINT ignored under ``nohup``, a
    host program's) is left alone.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        usable = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if usable and not self._installed:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def checkpoint(self, *_: Any) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (usable as a progress callback)."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Python's own handling while the block runs (the search defers Ctrl-C itself)."""
        self.checkpoint()
        self.uninstall()
        try:
            yield
        finally:
            self.install()


@contextmanager
def _deferred_interrupts() -> Iterator[_Interrupts]:
    guard = _Interrupts()
    guard.install()
    try:
        yield guard
        guard.checkpoint()  # a Ctrl-C after the last checkpoint still ends the command as one
    finally:
        guard.uninstall()


class _Main(click.Group):
    """The command group: a Ctrl-C that reaches it (outside any command's own handling)
    exits 130 with ``satadvisor: interrupted``, like one inside a command, not click's
    ``Aborted!`` with exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("satadvisor: interrupted", err=True)
            sys.exit(130)


def _folder_name(param: click.Parameter, value: str | None) -> str | None:
    """A name that becomes one folder under --out: no separators, not '', '.', '..' or the
    marker file's name.

    Anything else could make the report replace --out itself or a folder above it, or make
    --out look like a report folder.
    """
    if value is None:
        return None
    if not plain_folder_name(value):
        raise click.BadParameter(
            f"{value!r} is not a plain folder name; use letters, digits, '-', '_' or '.', "
            "e.g. vgg16-run2",
            param=param,
        )
    return value


def _single_file_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--single-file",
        is_flag=True,
        help="Inline plotly.js into index.html (about 5 MB) instead of writing plotly.min.js "
        "beside it: that one file is the whole report, to share or open anywhere.",
    )(f)


def _debug_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(f)


class _Positions(click.ParamType):
    """``--positions``: ``auto``, ``all`` or a positive number of rows."""

    name = "auto|all|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if text in ("auto", "all"):
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is not auto, all or a positive number of rows", param, ctx)


class _Epochs(click.ParamType):
    """``--epochs``: a whole number of epochs, or ``auto`` (until learned and settled)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or value == "auto":
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither a number of epochs nor 'auto'", param, ctx)
        if not 1 <= number <= 10_000:
            self.fail(f"{number} is not in the range 1 to 10000 (or 'auto')", param, ctx)
        return number


def _epochs_config(epochs: int | str | None, max_epochs: int) -> dict[str, Any]:
    """TrainConfig arguments for ``--epochs N|auto`` (default auto) and ``--max-epochs``."""
    if epochs is None or epochs == "auto":
        return {"epochs": max_epochs, "auto_epochs": True}
    return {"epochs": int(epochs)}


def _training_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `analyze` and `optimize` (dataset, resolution, proxy training)."""
    options = [
        click.option(
            "--dataset",
            default=None,
            metavar="NAME",
            help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn, imagefolder:PATH or "
            "synthetic. Default: the model file's DATASET, else digits.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Root of the torchvision datasets. Default: ~/.cache/satadvisor/data.",
        ),
        click.option(
            "--download/--no-download",
            default=False,
            show_default=True,
            help="Let torchvision download a missing dataset.",
        ),
        click.option(
            "--resolution",
            type=click.IntRange(*RESOLUTION_RANGE),
            default=None,
            help="Input resolution in px. Default: RESOLUTION of the model file, else native.",
        ),
        click.option(
            "--epochs",
            type=_Epochs(),
            default=None,
            help="Epochs of each proxy training, or 'auto': train until the proxy has learned "
            "and its saturation profile has settled (at most --max-epochs). Default: auto for "
            "analyze, 5 for optimize (a search compares proxies at one fixed length).",
        ),
        click.option(
            "--max-epochs",
            type=click.IntRange(2, 10_000),
            default=20,
            show_default=True,
            help="Cap of --epochs auto.",
        ),
        click.option(
            "--subset",
            type=click.IntRange(1, None),
            default=None,
            metavar="N",
            help="Cap each split of the proxy training at N images (stratified by class, "
            "seeded). Default: all.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 65_536),
            default=64,
            show_default=True,
            help="Mini-batch size.",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(0, 100, min_open=True),
            default=0.05,
            show_default=True,
            help="Peak learning rate (SGD with Nesterov momentum, cosine schedule).",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            metavar="DEVICE",
            help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(0, 2**31 - 1),
            default=0,
            show_default=True,
            help="Seed of weights, data split, batch order and augmentation.",
        ),
        click.option(
            "--positions",
            type=_Positions(),
            default="auto",
            show_default=True,
            help="Rows per batch and layer the saturation tracker reads: auto (a sample sized "
            "from the layer's width, at the error stated in docs/saturation.md), all (every "
            "position), or a number N.",
        ),
        click.option(
            "--set",
            "set_items",
            multiple=True,
            metavar="KNOB=VALUE",
            help="Pin a knob of build_model (repeatable), e.g. --set depth=6 --set resolution=32.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("reports"),
            show_default=True,
            help="Directory the report folder is written into.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(cls=_Main, context_settings=CONTEXT)
@click.version_option(package_name="satadvisor")
def main() -> None:
    """Is my CNN the right shape? Layer saturation + receptive fields -> concrete changes."""


def _check_device(device: str) -> None:
    """A device this machine has: cpu, cuda (with an index below the device count) or mps."""
    import torch

    usage = "use auto, cpu, cuda, cuda:N or mps"
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}: {usage}") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: satadvisor does not run on {dev.type}; {usage}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available here; use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(
                f"--device {device}: this machine has {count} CUDA device"
                f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1}); use one of them"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here; use --device cpu or auto")


def _in_memory_storage(url: str | None) -> bool:
    """Whether ``url`` is an SQLite database that lives in memory only (``sqlite://``,
    ``sqlite:///:memory:``, ``file::memory:`` or ``mode=memory`` URIs)."""
    if url is None or "://" not in url:
        return False
    scheme, rest = url.split("://", 1)
    if scheme.lower().split("+", 1)[0] != "sqlite":
        return False
    path, _, query = rest.partition("?")
    database = path[1:] if path.startswith("/") else path
    if database in ("", ":memory:"):
        return True
    params = {k.lower(): v.lower() for k, _, v in (p.partition("=") for p in query.split("&"))}
    uri = params.get("uri") in ("true", "1")
    return uri and (database.startswith("file::memory:") or params.get("mode") == "memory")


@main.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@_training_options
@click.option(
    "--name",
    default=None,
    callback=lambda ctx, param, value: _folder_name(param, value),
    help="Report folder name. Default: the model's name.",
)
@click.option(
    "--no-train", is_flag=True, help="Receptive-field analysis only (no training; seconds)."
)
@click.option("--json", "as_json", is_flag=True, help="Print analysis.json to stdout.")
@_single_file_option
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress on stderr (by default one line per epoch: accuracy, settling, ETA).",
)
@_debug_option
def analyze(
    model: str | None,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    resolution: int | None,
    epochs: int | str | None,
    max_epochs: int,
    subset: int | None,
    batch_size: int,
    lr: float,
    device: str,
    seed: int,
    positions: int | str,
    set_items: tuple[str, ...],
    out: Path,
    name: str | None,
    no_train: bool,
    as_json: bool,
    single_file: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Profile MODEL, explain its saturation profile and receptive fields, recommend changes.

    MODEL is a model file (build_model(...) or model = ...), a built-in name (vgg, resnet,
    plain, vgg16, resnet18, ...), or omitted: ./model.py when present, else the embedded
    default (a VGG-style network on scikit-learn's digits).
    """
    with _errors(debug), _deferred_interrupts() as interrupts, _stdout_kept_for(as_json) as stdout:
        from satadvisor import spec as spec_mod
        from satadvisor._io import check_output_dir
        from satadvisor.advisor import analyze as run_analysis
        from satadvisor.config import TrainConfig
        from satadvisor.report import write_analysis
        from satadvisor.report._analysis import with_commands

        _check_device(device)
        spec = spec_mod.load(model)
        knobs = spec.parse_set(list(set_items))
        folder = name or spec.name
        if not plain_folder_name(folder):
            raise UsageError(
                f"{model or spec.source}: the file's name gives the report folder {folder!r}, which "
                "is not a plain folder name; pass --name with one, e.g. --name mymodel"
            )
        check_output_dir(out / folder)
        interrupts.checkpoint()
        config = TrainConfig(
            **_epochs_config(epochs, max_epochs),
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            positions=positions,  # type: ignore[arg-type]  # _Positions gives auto, all or int
        )
        with _progress_bar(enabled=not as_json and not quiet) as bar:

            def progress(p: Any) -> None:
                interrupts.checkpoint()  # Ctrl-C stops at the next training step
                if bar is not None:
                    bar(p)

            epochs_line = _EpochLines(config) if not quiet else None
            analysis = run_analysis(
                spec,
                knobs=knobs,
                dataset=dataset,
                resolution=resolution,
                data_dir=data_dir,
                download=download,
                config=config,
                train=not no_train,
                name=folder,
                subset=subset,
                progress=progress,
                stop=epochs_line,
            )
        interrupts.checkpoint()
        payload = with_commands(analysis.to_dict())  # each recommendation's "try it" command
        earlier = _earlier_report(out / folder)
        index = write_analysis(payload, out / folder, single_file=single_file)
        if earlier is not None and earlier != _report_identity(payload):
            src, data, res = earlier
            _stderr_line(
                f"satadvisor: note: {out / folder} held the report of {src} on {data} at {res} px; "
                "it was replaced (pass --name to keep reports side by side)"
            )
        interrupts.checkpoint()
        if as_json:
            click.echo(json.dumps(payload, indent=2), file=stdout)
        else:
            click.echo(format_summary(payload, index))


class _EpochLines:
    """One line per proxy epoch on stderr: accuracy, whether the proxy learned, how far the
    profile still moves (it settles at ≤ the tolerance), and the ETA. Above the bar on a
    terminal; plain lines when piped (a long run in the background is not silent)."""

    def __init__(self, config: Any) -> None:
        import time

        from satadvisor.integrations import SaturationWatch

        self._clock = time.monotonic
        self._start = self._clock()
        self._watch = SaturationWatch()
        self._config = config

    def __call__(self, result: Any) -> None:
        from satadvisor import trust

        record = result.epochs[-1]
        history = [ep.get("train", []) for ep in result.saturation]
        state = self._watch.update(history[-1]) if history else None
        done, cap = record.epoch, self._config.epochs
        per_epoch = (self._clock() - self._start) / done
        parts = [f"epoch {done}/{cap}{' (at most)' if self._config.auto_epochs else ''}"]
        parts.append(f"val acc {record.eval_accuracy:.3f}, loss {record.train_loss:.3f}")
        parts.append("learned" if result.learned else "not learned yet")
        if state is not None and state.max_change is not None:
            moved = f"profile moved {state.max_change:.3f}"
            settled = "settled" if state.settled else f"settles at ≤ {trust.SETTLE_TOLERANCE:g}"
            parts.append(f"{moved} ({settled})")
        left = (cap - done) * per_epoch
        if done < cap:
            parts.append(f"ETA {'≤ ' if self._config.auto_epochs else ''}{_minutes(left)}")
        _stderr_line(", ".join(parts))
        return None


def _report_identity(analysis: Mapping[str, Any]) -> tuple[str, str, Any]:
    """What a report is of: model source, dataset and resolution."""
    return (
        str((analysis.get("model") or {}).get("source")),
        str(analysis.get("dataset")),
        analysis.get("resolution"),
    )


def _earlier_report(folder: Path) -> tuple[str, str, Any] | None:
    """What the report already in ``folder`` is of (None: none, or unreadable)."""
    try:
        earlier = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _report_identity(earlier) if isinstance(earlier, dict) else None


def _human(n: float) -> str:
    """14858600 → "14.9 M": the report's count format, for the terminal."""
    from satadvisor.report._page import fmt_count

    return fmt_count(n)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _stderr_line(text: str) -> None:
    """A line on stderr that does not break a progress bar drawn there."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        click.echo(text, err=True)


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A tqdm bar on a terminal (epoch i/N, step, ETA); nothing when piped."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar: tqdm[Any] | None = None

    def update(p: Any) -> None:
        nonlocal bar
        if bar is None or bar.total != p.epochs * p.steps:
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.epochs * p.steps, unit="step", leave=False, file=sys.stderr)
        bar.set_description(f"epoch {p.epoch}/{p.epochs}")
        bar.n = (p.epoch - 1) * p.steps + p.step
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _bar(value: float | None) -> str:
    if value is None:
        return " " * BAR_WIDTH
    filled = max(0, min(BAR_WIDTH, round(value * BAR_WIDTH)))
    return "█" * filled + "·" * (BAR_WIDTH - filled)


def format_summary(analysis: dict[str, Any], index: Path) -> str:
    """The compact terminal summary: saturation bars with the tail marked, the advice, the path."""
    lines = []
    training = analysis.get("training")
    head = (
        f"{analysis['model']['name']} on {analysis['dataset']} at {analysis['resolution']} px"
        f" — {_human(analysis['cost']['macs'])} MACs, {_human(analysis['cost']['params'])} params"
    )
    lead = list(analysis.get("lead") or [])
    verdict = analysis["verdict"]
    if training:
        head += f", {training['eval_name']} accuracy {_accuracy(training['accuracy'])}"
        head += f" after {training['epochs']} epoch{'s' if training['epochs'] != 1 else ''}"
        if training["status"] not in ("completed", "not_learned"):
            head += f" ({training['status']}: {training['reason']})"
        elif training.get("settled_epoch"):
            head += f", settled from epoch {training['settled_epoch']}"
    lines.append(head)
    if lead and training and not training.get("learned"):
        # A proxy that learned nothing: say so before any number that could be read as advice.
        lines.append("DID NOT LEARN: " + " ".join(lead))
        verdict = verdict[len(" ".join(lead)) :].strip()
    width = max((len(row.get("label") or row["name"]) for row in analysis["layers"]), default=4)
    for row in analysis["layers"]:
        sat = row["saturation"]
        marks = []
        if row["tail"]:
            marks.append("tail")
        if row["unproductive"]:
            marks.append("unproductive")
        elif row["critical"]:
            marks.append("critical")
        value = f"{sat:5.2f}" if sat is not None else "  -  "
        r_min = f"r={row['r_min']}" if row["r_min"] is not None else ""
        lines.append(
            f"  {row.get('label') or row['name']:<{width}}  {_bar(sat)} {value}  {r_min:<7} "
            f"{' '.join(marks)}".rstrip()
        )
    lines.append("")
    lines.append(verdict)
    for i, rec in enumerate(analysis["recommendations"], 1):
        cost = rec.get("cost")
        effect = ""
        if cost:
            effect = f" ({cost['macs_ratio']:.2f}× MACs, {cost['params_ratio']:.2f}× params)"
        lines.append(f"  {i}. {rec['title']}{effect}")
        if rec.get("command"):
            lines.append(f"     try: {rec['command']}")
        elif rec.get("set_args"):
            lines.append(f"     {rec['set_args']}")
    lines.append("")
    lines.append(f"report: {index}")
    return "\n".join(lines)


@main.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option(
    "--budget",
    type=click.IntRange(1, 100_000),
    required=True,
    help="Proxy trials in the study in total (a rerun resumes up to this number).",
)
@click.option(
    "--strategy",
    type=click.Choice(["guided", "tpe", "random"]),
    default="guided",
    show_default=True,
    help=(
        "guided: TPE steered by saturation (rule moves, early stops of settled tails and "
        "dominated trials) and receptive fields (no draws with unproductive layers); "
        "tpe or random: Optuna's sampler alone."
    ),
)
@click.option(
    "--objectives",
    default="accuracy,macs",
    show_default=True,
    help="accuracy, optionally with macs and/or params (comma-separated).",
)
@click.option(
    "--study-name",
    default=None,
    callback=lambda ctx, param, value: _folder_name(param, value),
    help="Default: <model>-<dataset>.",
)
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Optuna storage: sqlite:///f.db (default studies/<study>.db), postgresql://…, "
    "mysql://…, journal:f.log.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Local worker processes (one GPU each when several are visible).",
)
@click.option(
    "--validate-top",
    type=click.IntRange(0, 100),
    default=3,
    show_default=True,
    help="Pareto-optimal configurations retrained in full (with the baseline); 0 skips.",
)
@click.option(
    "--validate-seeds",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    metavar="N",
    help="Seeds of each full run: a pick is confirmed only when its paired 95 % interval over "
    "the seeds supports it (1: nothing is confirmed). GPU: 5 or more.",
)
@click.option(
    "--full-epochs",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Epochs of each full validation run. Default: 4× --epochs.",
)
@click.option(
    "--full-subset",
    type=click.IntRange(1, None),
    default=None,
    metavar="N",
    help="Cap each split of the full validation runs at N images. Default: all.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop drawing new trials after this many seconds.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress on stderr (by default one line per trial and per full run, with one ETA "
    "over the search and the validation runs).",
)
@_single_file_option
@_training_options
@_debug_option
def optimize(
    model: str | None,
    budget: int,
    strategy: str,
    objectives: str,
    study_name: str | None,
    storage: str | None,
    workers: int,
    validate_top: int,
    validate_seeds: int,
    full_epochs: int | None,
    full_subset: int | None,
    timeout: float | None,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    resolution: int | None,
    epochs: int | str | None,
    max_epochs: int,
    subset: int | None,
    batch_size: int,
    lr: float,
    device: str,
    seed: int,
    positions: int | str,
    set_items: tuple[str, ...],
    out: Path,
    single_file: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Search depth, kernel size, resolution and width of MODEL; validate the best in full.

    Rerunning the same command resumes the study. Start the same command on several machines
    with one --storage (PostgreSQL, MySQL) and they share the work.
    """
    with _errors(debug), _deferred_interrupts() as interrupts:
        from satadvisor import spec as spec_mod
        from satadvisor._io import check_output_dir
        from satadvisor.config import TrainConfig
        from satadvisor.report import write_study
        from satadvisor.search import optimize as run_search
        from satadvisor.search.study import parse_objectives

        _check_device(device)
        if _in_memory_storage(storage):
            raise UsageError(
                f"--storage {storage}: an in-memory database is lost when the run ends (and "
                "each worker would get its own); pass a file, e.g. --storage "
                "sqlite:///studies/NAME.db"
            )
        if epochs == "auto":
            raise UsageError(
                "--epochs auto is for analyze: a search compares its proxies at one fixed "
                "number of epochs; pass --epochs N (e.g. the epochs analyze --epochs auto took)"
            )
        parse_objectives(objectives)
        spec = spec_mod.load(model)
        pinned = spec.parse_set(list(set_items))
        if study_name is None:
            # the name optimize() would choose (see search.study.optimize); a dataset such as
            # imagefolder:data/pets would put a '/' into it, and so the report and the default
            # storage into nested folders below reports/ and studies/
            study_name = f"{spec.name}-{dataset or spec.dataset or 'digits'}"
            study_name = "".join("_" if c in "/\\\0" else c for c in study_name)
        check_output_dir(out / study_name)
        interrupts.checkpoint()
        config = TrainConfig(
            epochs=5 if epochs is None else int(epochs),
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            positions=positions,  # type: ignore[arg-type]  # _Positions gives auto, all or int
        )
        with interrupts.paused():  # the search defers Ctrl-C itself (search/_signals.py)
            summary = run_search(
                model,
                budget=budget,
                strategy=strategy,
                objectives=objectives,
                study_name=study_name,
                storage=storage,
                workers=workers,
                validate_top=validate_top,
                validate_seeds=validate_seeds,
                full_epochs=full_epochs,
                config=config,
                dataset=dataset,
                resolution=resolution,
                data_dir=data_dir,
                download=download,
                pinned=pinned,
                timeout=timeout,
                subset=subset,
                full_subset=full_subset,
                on_progress=None if quiet else _print_progress,
            )
        try:
            index = write_study(summary, out / study_name, single_file=single_file)
        except OutputError as exc:  # a full disk after hours of search: the study is kept
            raise OutputError(_study_kept(str(exc), study_name, storage, out)) from exc
        interrupts.checkpoint()
        click.echo(format_study(summary.to_dict(), index))


def _study_kept(message: str, study_name: str, storage: str | None, out: Path) -> str:
    """A report write that failed after the search: its problem, and that the study is saved
    (rerunning ``optimize`` would refuse, the budget being spent; ``report`` writes it)."""
    from satadvisor.search.storage import redact

    where = f" --storage {redact(storage)}" if storage else ""
    where += f" --out {out}" if out != Path("reports") else ""
    return (
        f"{message.split('; ')[0]}; the study is saved: make room (or pass --out with a "
        f"writable directory) and run `satadvisor report {study_name}{where}` to write its "
        "report"
    )


def _knobs_text(knobs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in knobs.items())


def _eta_text(progress: Any) -> str:
    """``ETA 4.1 min (search 1.5 min + validation ≥ 2.6 min)``; the parts only while both go on."""
    at_least = "≥ " if progress.at_least else ""
    if progress.eta is None:
        if progress.search_left is None:
            return "ETA: timing the first trials"
        return f"search ETA {_minutes(progress.search_left)}; validation not timed yet"
    text = f"ETA {at_least}{_minutes(progress.eta)}"
    if progress.search_left and progress.validation_left:
        text += (
            f" (search {_minutes(progress.search_left)} + validation {at_least}"
            f"{_minutes(progress.validation_left)}, {progress.runs_left} full runs)"
        )
    return text


def _print_progress(progress: Any) -> None:
    """One line per finished trial and per full run on stderr (above nothing: no bar), with
    the ETA over the search and the validation runs; plain when piped."""
    if progress.trial is not None:
        event = progress.trial
        result = ""
        if event.accuracy is not None:
            result = f"acc {event.accuracy:.3f}, {_human(event.macs or 0)} MACs"
            if event.state == "pruned" and event.reason:
                result += f" after {event.epochs} epoch(s): {event.reason}"
        elif event.reason:
            result = event.reason
        _stderr_line(
            f"trial {event.done}/{event.budget} #{event.number} [{event.source}] "
            f"{_knobs_text(event.knobs)}: {event.state} {result} ({_eta_text(progress)})"
        )
    elif progress.run is not None:
        record = progress.run
        label = "baseline" if record.baseline else f"trial #{record.trial}"
        status = "" if record.status == "completed" else f" ({record.status})"
        _stderr_line(
            f"full run {progress.done}/{progress.total} {label} seed {record.seed} "
            f"{_knobs_text(record.knobs)}: val acc {_accuracy(record.val_accuracy)}, "
            f"test acc {_accuracy(record.test_accuracy)} (reported only){status} "
            f"({_eta_text(progress)})"
        )
    elif progress.total:
        _stderr_line(
            f"search done; validation: {progress.total} full run"
            f"{'' if progress.total == 1 else 's'} ({_eta_text(progress)})"
        )


def _accuracy(value: float | None) -> str:
    """An accuracy, or '—' for a full run that has none (it diverged)."""
    return "—" if value is None else f"{value:.3f}"


def _spread(record: dict[str, Any]) -> str:
    """Mean validation accuracy with its spread over seeds: ``0.958 ± 0.004 (3 seeds)``."""
    n = len(record.get("seeds") or [])
    std = record.get("val_std")
    spread = f" ± {std:.3f}" if std is not None else ""
    return f"{_accuracy(record.get('val_accuracy'))}{spread} ({n} seed{'' if n == 1 else 's'})"


def _paired_text(rec: dict[str, Any], tolerance: float) -> str:
    """``Δ val +0.002, 95 % interval [-0.003, +0.007]: confirmed, accuracy tie`` (or why not)."""
    cmp = rec.get("comparison") or {}
    delta = f"Δ val {rec['accuracy_delta']:+.3f}"
    verdict = rec.get("verdict", "not confirmed")
    if cmp.get("low") is None or cmp.get("high") is None:
        why = "one seed, no interval" if rec.get("basis") == "one seed" else "runs missing"
        return f"{delta}: {verdict} ({why})"
    level = round(100 * cmp.get("level", 0.95))
    interval = f"{level} % interval [{cmp['low']:+.3f}, {cmp['high']:+.3f}]"
    if rec.get("basis") == "missing runs":
        why = f"{cmp.get('missing')} runs missing or unscored"
    elif verdict == "tie":
        why = "the interval contains 0"
    elif verdict == "confirmed":
        why = (
            "more accurate"
            if cmp.get("accuracy") == "more accurate"
            else (f"accuracy {cmp.get('accuracy')}, within the {-tolerance:+.3f} tolerance")
        )
    elif rec.get("claim") == "cheaper":
        why = f"the interval reaches below {-tolerance:+.3f}"
    else:
        why = "the interval does not lie above 0"
    return f"{delta}, {interval}: {verdict} ({why})"


def format_study(summary: dict[str, Any], index: Path) -> str:
    """Terminal summary of a study: the recommended configurations against the baseline.

    Validation accuracy (what chose) with its spread over seeds, the paired difference to the
    baseline with its 95 % interval and the verdict; test accuracy is shown as reported only.
    """
    tolerance = float(summary.get("tolerance") or 0.005)
    head = (
        f"study {summary['study_name']}: {summary['counted_trials']} trials "
        f"(budget {summary['budget']}), {len(summary['pareto'])} on the Pareto front"
    )
    missed = int(summary.get("not_learned") or 0)
    if missed:
        head += f"; {missed} prox{'y' if missed == 1 else 'ies'} did not learn (left out)"
    lines = [head]
    base = next((r for r in summary["validation"] if r.get("baseline")), None)
    if base is not None:
        lines.append(
            f"  baseline   {_knobs_text(base['knobs'])}: val acc {_spread(base)}, test acc "
            f"{_accuracy(base['test_accuracy'])} (reported only), {_human(base['macs'])} MACs"
        )
    for rec in summary["recommended"]:
        word = "recommend " if rec.get("confirmed") else "candidate "
        set_line = " ".join(f"--set {k}={v}" for k, v in rec["knobs"].items())
        lines.append(
            f"  {word} {_knobs_text(rec['knobs'])}: val acc {_spread(rec)}, test acc "
            f"{_accuracy(rec['test_accuracy'])} (reported), {rec['macs_ratio']:.2f}× MACs"
        )
        lines.append(f"             {_paired_text(rec, tolerance)}")
        if rec.get("confirmed"):
            lines.append(f"             {set_line}")
    confirmed = [r for r in summary["recommended"] if r.get("confirmed")]
    if base is not None and not confirmed:
        if len(summary["validation"]) < 2:
            lines.append("  no other configuration was validated: keep the baseline")
        elif not summary["recommended"]:
            lines.append("  no validated configuration beats the baseline: keep it")
        elif len(base.get("seeds") or []) < 2:
            lines.append(
                "  nothing is confirmed with one seed: keep the baseline, or rerun with "
                "--validate-seeds 3 (or more)"
            )
        else:
            lines.append("  no candidate is confirmed over the seeds: keep the baseline")
    if summary.get("rank_agreement") is not None:
        lines.append(
            f"  proxy vs full-run validation rank agreement (Spearman): "
            f"{summary['rank_agreement']:.2f}"
        )
    lines.append(f"report: {index}")
    return "\n".join(lines)


@main.command(context_settings=CONTEXT)
@click.argument("study")
@click.option("--storage", default=None, metavar="URL", help="Default: studies/<STUDY>.db.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Directory the report folder is written into.",
)
@click.option(
    "--name",
    default=None,
    callback=lambda ctx, param, value: _folder_name(param, value),
    help="Report folder name. Default: STUDY.",
)
@_single_file_option
@_debug_option
def report(
    study: str,
    storage: str | None,
    out: Path,
    name: str | None,
    single_file: bool,
    debug: bool,
) -> None:
    """Re-render the report of STUDY from its storage.

    STUDY names the report folder unless --name is given; a study name that is not a plain
    folder name (one with '/', or '..') needs --name, and --storage as it has no default file.
    """
    with _errors(debug), _deferred_interrupts() as interrupts:
        from satadvisor._io import check_output_dir

        if storage is None and not plain_folder_name(study):
            raise UsageError(
                f"no study {study!r} under studies/: only a plain name (no '/', not '', '.' "
                "or '..') has a default storage there; pass the --storage it used (and --name "
                "for its folder)"
            )
        if _in_memory_storage(storage):
            raise UsageError(
                f"--storage {storage}: an in-memory database is empty when it is opened, so it "
                "holds no study; pass the --storage optimize used"
            )
        folder = name or study
        if not plain_folder_name(folder):
            raise UsageError(
                f"study {study!r} is not a plain folder name, so it cannot name the report "
                "folder; pass --name with one, e.g. --name my-study"
            )
        check_output_dir(out / folder)
        interrupts.checkpoint()

        from satadvisor.report import write_study
        from satadvisor.search import load_summary

        summary = load_summary(study, storage=storage)
        interrupts.checkpoint()
        index = write_study(summary, out / folder, single_file=single_file)
        interrupts.checkpoint()
        click.echo(format_study(summary.to_dict(), index))
