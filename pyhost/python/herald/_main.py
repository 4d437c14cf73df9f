"""The program herald-python runs, read from its arguments the way ``python``
reads them: ``SCRIPT ARGS``, ``-m MODULE ARGS`` or ``-c CODE ARGS``.

Every rank calls ``prepare`` (so ``sys.argv`` and ``sys.path`` are the same on
every node and modules beside the script import everywhere); rank 0 then calls
``run``; every rank calls ``finish`` at the end of the job.
"""

import atexit
import io
import os
import runpy
import site
import sys

from . import _context

_program = None  # ("script" | "module" | "code", target)


def prepare(args):
    """Sets ``sys.argv`` and ``sys.path[0]`` for the program in ``args``.
    Returns None, or what is wrong with the arguments."""
    global _program
    args = [os.fsdecode(arg) for arg in args]
    if args[0] in ("-m", "-c"):
        if len(args) < 2:
            return f"{args[0]} needs an argument"
        kind = "module" if args[0] == "-m" else "code"
        _program = (kind, args[1])
        # As python does: argv[0] becomes the module's path when it runs.
        sys.argv = [args[0]] + args[2:]
        sys.path.insert(0, os.getcwd() if kind == "module" else "")
    elif args[0].startswith("-"):
        return f"unknown option {args[0]}: run a script, -m MODULE or -c CODE"
    elif not os.path.exists(args[0]):
        return f"can't open file {os.path.abspath(args[0])!r}: no such file or directory"
    else:
        _program = ("script", args[0])
        sys.argv = list(args)
        sys.path.insert(0, os.path.dirname(os.path.realpath(args[0])))
    return _use_virtualenv()


def _virtualenv_site_packages():
    """The site-packages of the activated virtualenv, if one is."""
    venv = os.environ.get("VIRTUAL_ENV")
    if not venv:
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(venv, "lib", version, "site-packages")


def library_dirs():
    """Where native libraries may be loaded from because their Python code is
    trusted already: the interpreter's site-packages and the activated
    virtualenv's."""
    dirs = list(site.getsitepackages())
    venv = _virtualenv_site_packages()
    if venv:
        dirs.append(venv)
    return dirs


def _use_virtualenv():
    """An activated virtualenv's packages come first, as they would for its python.
    Returns None, or why the virtualenv cannot be used."""
    venv = os.environ.get("VIRTUAL_ENV")
    if not venv:
        return None
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    theirs = _virtualenv_version(venv)
    if theirs is not None and theirs != ours:
        return (
            f"the virtualenv {venv} (VIRTUAL_ENV) is for Python {theirs}, but herald-python "
            f"embeds Python {ours} ({sys.version.split()[0]}): its packages cannot be used "
            f"here. Make one with python{ours} -m venv, deactivate it, or install the herald "
            f"wheel into it and run its own python3"
        )
    packages = _virtualenv_site_packages()
    before = list(sys.path)
    site.addsitedir(packages)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = before[:1] + added + before[1:]
    return None


def _virtualenv_version(venv):
    """MAJOR.MINOR of the Python a virtualenv was made with (its pyvenv.cfg), or None."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            parts = value.strip().split(".")
            if len(parts) >= 2:
                return f"{parts[0]}.{parts[1]}"
    return None


def run():
    """Runs the program on this node; returns its exit status. A child the
    program forked (``os.fork``) that ends here exits at once, as a forked
    python would: the job, and the links herald-python shares with it, are
    its parent's."""
    kind, target = _program
    node_pid = os.getpid()
    try:
        if kind == "module":
            runpy._run_module_as_main(target, alter_argv=True)
        elif kind == "code":
            _run_in_main(target, "<string>")
        elif os.path.isfile(target):
            with io.open_code(target) as file:
                source = file.read()
            sys.modules["__main__"].__file__ = target
            _run_in_main(source, target)
        else:
            runpy.run_path(target, run_name="__main__")
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit)
    except BaseException as error:  # noqa: BLE001 - printed as python would
        _print_uncaught(error)
        status = 1
    if os.getpid() != node_pid:
        finish()
        os._exit(status & 0xFF)
    status = _settle_at_exit(status)
    finish()
    return status


def finish():
    """Runs the ``atexit`` handlers and flushes the standard streams."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream has nothing to flush
                pass


def _run_in_main(source, filename):
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, sys.modules["__main__"].__dict__)


def _settle_at_exit(status):
    """Global registrations started inside imports and never awaited since are
    awaited now; their failure fails the program."""
    try:
        _context.settle(all_threads=True)
    except Exception as error:  # noqa: BLE001 - printed, and fails the run
        _print_uncaught(error)
        return status or 1
    return status


def _exit_status(exit):
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_uncaught(error):
    # Drop this module's own frames, so the traceback starts in the program.
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_frame.f_globals.get("__name__") == __name__:
        traceback = traceback.tb_next
    sys.excepthook(type(error), error.with_traceback(traceback), traceback)
