"""``gradcli descend``: gradient descent on a scalar loss, the seeds' training loop."""
from __future__ import annotations

import click

from ..cliutil import emit, fail, load_program, note, parse_program, program_options, \
    reports_errors, warn


def _formats():
    """The formats the render registry has for "descend"."""
    from .. import render

    return render.choices("descend")


def _shapes(items):
    from ..training import parse_shape

    shapes = {}
    for item in items:
        name, eq, dims = item.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"{item!r}: give NAME=DIMS, like W=3,2",
                                     param_hint="--shape")
        shapes[name.strip()] = parse_shape(dims, f"--shape {name.strip()}")
    return shapes


def _betas(text):
    try:
        b1, b2 = (float(b) for b in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give two numbers, like 0.9,0.999",
                                 param_hint="--betas") from None
    return b1, b2


def _write_text(path, text, what):
    from ..training import _atomic

    _atomic(path, lambda f: f.write(text.encode()), what)


def _check_plot(path):
    """Before the run: a picture format matplotlib writes, and matplotlib itself."""
    import os

    if os.path.splitext(path)[1].lower() not in (".png", ".svg", ".pdf"):
        fail(f"--plot {path}: give a .png, .svg or .pdf file name")
    try:
        import matplotlib  # noqa: F401 - the optional extra, loaded only for --plot
    except ImportError:
        fail("--plot needs matplotlib, an optional extra: pip install 'gradcli[plot]'")


class _Watch:
    """What the loop calls at every step: the progress bar on a terminal, --log-every lines
    in a pipe, and Ctrl-C, which asks the loop to stop after the current step."""

    def __init__(self, steps, log_every, first_step):
        import sys

        from ..render.layout import is_plain

        self.stop = False
        self.steps = steps
        self.log_every = log_every
        self.first_step = first_step
        self.live = None
        if not is_plain(sys.stderr) and not _dumb():
            from ..render.training import Live

            self.live = Live(steps, sys.stderr, log_every, first_step)

    def __call__(self, k, loss):
        if self.live is not None:
            self.live.update(k, loss)
        elif self.log_every and k % self.log_every == 0:
            from ..render.text import num

            note(f"step {self.first_step + k}  loss {num(loss)}")
        return self.stop

    def interrupt(self, signum, frame):
        if self.stop:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop = True


def _dumb():
    import os

    return os.environ.get("TERM") == "dumb"


@click.command("descend", short_help="Gradient descent on a scalar loss.")
@program_options
@click.option("--params", "params", required=True, metavar="A,B",
              help="The bindings that learn (each keeps its shape); the rest is data.")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True, metavar="N",
              help="Number of updates.")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "adam", "adamw"]),
              default="sgd", show_default=True, help="Update rule, as torch.optim.")
@click.option("--momentum", type=float, default=0.9, show_default=True,
              help="momentum: the factor of torch.optim.SGD(momentum=...).")
@click.option("--nesterov", is_flag=True, help="momentum: Nesterov's variant.")
@click.option("--dampening", type=float, default=0.0, show_default=True,
              help="momentum: dampening, as torch.optim.SGD.")
@click.option("--betas", default="0.9,0.999", show_default=True, metavar="B1,B2",
              help="adam/adamw: the moments' decay rates.")
@click.option("--eps", type=float, default=1e-8, show_default=True,
              help="adam/adamw: added to the denominator.")
@click.option("--amsgrad", is_flag=True, help="adam/adamw: the AMSGrad variant.")
@click.option("--weight-decay", type=float, default=None,
              help="L2 penalty (sgd, momentum, adam) or decoupled decay (adamw)  "
                   "[default: 0; adamw 0.01]")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "step"]),
              default="constant", show_default=True,
              help="Learning-rate schedule: PyTorch's CosineAnnealingLR or StepLR.")
@click.option("--t-max", type=click.IntRange(min=1), default=None, metavar="N",
              help="cosine: the steps of a half period  [default: --steps]")
@click.option("--eta-min", type=float, default=0.0, show_default=True,
              help="cosine: the smallest learning rate.")
@click.option("--step-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="step: multiply the rate by --gamma every N steps  "
                   "[default: a third of --steps]")
@click.option("--gamma", type=float, default=0.1, show_default=True,
              help="step: the factor.")
@click.option("--init", type=click.Choice(["zeros", "normal", "xavier"]), default=None,
              help="Start unbound parameters from zeros, N(0, 1) or Xavier-uniform.")
@click.option("--shape", "shape_items", multiple=True, metavar="NAME=DIMS",
              help="The shape of an unbound parameter for --init, like W=3,2 "
                   "(repeatable; a scalar without it).")
@click.option("--init-std", type=float, default=1.0, show_default=True,
              help="normal: the standard deviation.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of --init and --shuffle.")
@click.option("--batch", "batch_file", metavar="FILE",
              help="Data from a file (a CSV with a header, .jsonl, .npy/.npz) whose columns "
                   "bind the data variables they name; streamed in file order.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows per step (mini-batches)  [default: every row]")
@click.option("--shuffle", is_flag=True,
              help="A new order of the rows each epoch (--seed); reads the file whole.")
@click.option("--tol", type=float, default=None,
              help="Stop when the loss changes by less than this in one step.")
@click.option("--max-time", type=float, default=None, metavar="SECONDS",
              help="Stop after this long.")
@click.option("--log-every", type=click.IntRange(min=1), default=None, metavar="K",
              help="Show the loss every K steps (stderr, the table, --log).")
@click.option("--log", "log_file", metavar="FILE.csv",
              help="Write step,loss,grad_norm rows to a CSV file.")
@click.option("--plot", "plot_file", metavar="FILE.png|svg",
              help="Draw the loss curve (needs matplotlib: pip install 'gradcli[plot]').")
@click.option("--save", "save_file", metavar="FILE",
              help="Write the parameters (.json or .npz, for --values) and the optimizer "
                   "state (FILE.optim.npz, for --resume).")
@click.option("--resume", "resume_file", metavar="FILE",
              help="Continue a fit saved with --save FILE: its parameters and optimizer "
                   "state.")
@click.option("--format", "fmt", type=click.Choice(_formats()), default="table",
              show_default=True, help="table for people; json for programs.")
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, params, lr,
            steps, optimizer, momentum, nesterov, dampening, betas, eps, amsgrad,
            weight_decay, schedule, t_max, eta_min, step_size, gamma, init, shape_items,
            init_std, seed, batch_file, batch_size, shuffle, tol, max_time, log_every,
            log_file, plot_file, save_file, resume_file, fmt):
    """Gradient descent: each step p = p - lr * dL/dp for every parameter in --params.

    \b
      gradcli descend 'mean((w*x + b - y)**2)' --params w,b w=0 b=0 \\
          x=[1,2,3,4] y=[2,3,4,5] --lr 0.01 --steps 1000

    EXPR is any program with a scalar output (the loss).  Parameters start from their
    bindings, or from --init with --shape NAME=DIMS.  The optimizers and schedules are
    PyTorch's, with its defaults.  On a terminal a progress bar shows the loss as it falls
    (stderr); then the parameters and the loss curve.  Ctrl-C stops after the current
    step, still prints and saves, and exits 130.  A loss that becomes nan or inf stops
    with exit 1, naming the step and the parameter.
    """
    import signal
    import sys

    from .. import training

    if plot_file:
        _check_plot(plot_file)
    if save_file:
        training.check_save_path(save_file)
    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    first_step = int(training.load_state(resume_file)["step"]) if resume_file else 0
    options = dict(
        params=params, lr=lr, steps=steps, optimizer=optimizer, momentum=momentum,
        nesterov=nesterov, dampening=dampening, betas=_betas(betas), eps=eps,
        weight_decay=weight_decay, amsgrad=amsgrad, schedule=schedule, t_max=t_max,
        eta_min=eta_min, step_size=step_size, gamma=gamma, init=init,
        shapes=_shapes(shape_items), seed=seed, init_std=init_std, batch=batch_file,
        batch_size=batch_size, shuffle=shuffle, tol=tol, max_time=max_time,
        resume=resume_file, output=output, dtype=dtype, grad_norm=bool(log_file))
    watch = _Watch(steps, log_every, first_step)
    old = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, watch.interrupt)
    except ValueError:  # not the main thread (an embedding program): no Ctrl-C handling
        old = None
    try:
        if watch.live is not None:
            with watch.live:
                res = training.descend(graph, bindings, callback=watch, **options)
        else:
            res = training.descend(graph, bindings, callback=watch, **options)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    warn(res.warnings)
    if save_file:
        training.save(res, save_file)
    if log_file:
        from ..render.training import log_csv

        _write_text(log_file, log_csv(res, log_every), "--log")
    if plot_file:
        from ..render.training import plot

        plot(res, plot_file)
    _emit(fmt, res, log_every)
    if res.stopped == "interrupted":
        note(f"interrupted after {res.steps} steps")
        sys.exit(130)
    if res.diverged:
        fail(res.diverged, 1)


def _emit(fmt, res, log_every):
    emit(fmt, "descend", res, every=log_every)
