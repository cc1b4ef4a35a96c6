"""Command line: ``skinlib ...`` / ``python -m skinlib ...``, thin wrappers over the library.

Expected failures (bad input, damaged run files, divergence, permissions, Ctrl-C)
end in one ``error:`` line that says what to do; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from skinlib import __version__
from skinlib.commands.book import add_book_commands
from skinlib.commands.data import add_data_commands
from skinlib.commands.options import Formatter, Shared
from skinlib.commands.results import add_results_commands
from skinlib.commands.study import add_study_and_tools
from skinlib.commands.train import add_train_command, config_from_args, read_config_file, train_command, train_fields

__all__ = ["build_parser", "config_from_args", "main", "read_config_file", "train_command", "train_fields"]

log = logging.getLogger("skinlib")

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The ``skinlib`` command line: the shared options here, each group of commands in its own function."""
    from skinlib.study.profiles import PARAMETERS

    fmt = {"formatter_class": Formatter}
    parser = argparse.ArgumentParser(prog="skinlib", description=__doc__.splitlines()[0], **fmt)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"skinlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help="HAM10000 folder (default: $SKINLIB_DATA_DIR, data/, ../shared/data/)")
    skip_bad = argparse.ArgumentParser(add_help=False)
    skip_bad.add_argument("--skip-bad", action="store_true",
                          help="drop bad metadata rows and undecodable images (loudly) instead of failing")
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache-dir", help="decoded-image cache (default: $SKINLIB_CACHE_DIR or ~/.cache/skinlib)")
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs-dir", help="run store (default: $SKINLIB_RUNS_DIR or runs/ in the repository)")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--jobs", default="1", metavar="N",
                      help="runs trained at once, each in its own process ('auto': from the GPU's free memory "
                           "or the CPU cores)")
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                         help="override a profile parameter, VALUE parsed as YAML (e.g. -p epochs 16); "
                              f"names: {', '.join(PARAMETERS)}")

    shared = Shared(fmt, data_dir, skip_bad, cache, runs, jobs, profile)
    for add in (add_data_commands, add_train_command, add_book_commands, add_results_commands, add_study_and_tools):
        add(sub, shared)
    return parser


def _error(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return args.func(args)
    except KeyboardInterrupt:
        if args.command in ("data", "weights"):
            return _error("interrupted. The bytes downloaded so far are kept (<file>.part): the same command "
                          "resumes the download.", EXIT_INTERRUPTED, args.verbose)
        return _error("interrupted. Finished epochs are kept in the run folder: the same command resumes the run.",
                      EXIT_INTERRUPTED, args.verbose)
    except FloatingPointError as exc:
        return _error(f"training diverged: {exc}. The run folder keeps the epochs before it; lower --lr and "
                      "train again (a new config is a new run).", EXIT_ERROR, args.verbose)
    except PermissionError as exc:
        where = exc.filename or exc
        return _error(f"permission denied: {where}. Choose a writable folder (--runs-dir or SKINLIB_RUNS_DIR, "
                      "--cache-dir or SKINLIB_CACHE_DIR) or fix its permissions.", EXIT_ERROR, args.verbose)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        return _error(str(exc), EXIT_USAGE, args.verbose)
    except (RuntimeError, OSError) as exc:  # BookError, training failures, unreachable hosts
        return _error(f"{exc}" if str(exc) else type(exc).__name__, EXIT_ERROR, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
