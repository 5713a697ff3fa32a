"""``mmesid``: the entry point. Maps :class:`UserError` to exit 2, anything else to exit 1."""

from __future__ import annotations

import os
import sys

import typer

from mmesid_cli import __version__
from mmesid_cli.errors import UserError

app = typer.Typer(
    name="mmesid",
    help=(
        "MME-SID for sequential recommendation: embed items, tokenise them into semantic IDs "
        "with an MMD RQ-VAE, measure how much order the SIDs keep (formula 9), fine-tune an "
        "LLM with LoRA, evaluate under full ranking.\n\n"
        "Pipeline: data import-* -> embed -> tokenize -> concordance / finetune -> evaluate."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help, not typer's rich panels: click wraps every column to the terminal
    # (rich tables cut option names with "…" at 80 columns), shows no type tag on a flag,
    # and rejoins a docstring paragraph instead of keeping its source line breaks. `\b`
    # before a paragraph (the examples) keeps its lines as written.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmesid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """MME-SID tools."""


def _register() -> None:
    # Each subcommand module adds its commands to ``app``; imports stay light (torch and
    # transformers are imported inside the commands), so `mmesid --help` is instant.
    from mmesid_cli.cli import data, inspect

    data.register(app)
    inspect.register(app)
    __import__("mmesid_cli.cli.embed", fromlist=["register"]).register(app)
    from mmesid_cli.cli import evaluate

    evaluate.register(app)
    __import__("mmesid_cli.cli.tokenize", fromlist=["register"]).register(app)
    __import__("mmesid_cli.cli.finetune", fromlist=["register"]).register(app)
    from mmesid_cli.cli import collapse, concordance, curve

    concordance.register(app)
    collapse.register(app)
    curve.register(app)


_register()


def _usage_message(exc: Exception) -> str:
    """One line for a usage error: the problem, then where the help is.

    typer checks a choice through pydantic, whose message starts "Value error, "; the user
    needs only what follows.
    """
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="mmesid", standalone_mode=False)
    except UserError as exc:
        print(f"mmesid: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("mmesid: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except OSError as exc:
        # A file the user named (or a folder under it) that cannot be read or written is
        # their input, not our bug: one line naming it, exit 2. Without a file name it is
        # a runtime failure like any other.
        if exc.filename is None or os.environ.get("MMESID_DEBUG"):
            _internal(exc)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"mmesid: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # a runtime failure, not the user's input
        # typer bundles its own click: its usage errors (a bad option value, a missing
        # argument) have typer.BadParameter's bases, not the standalone click's.
        bases = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
        if isinstance(exc, bases["UsageError"]):
            print(f"mmesid: error: {_usage_message(exc)}", file=sys.stderr)
            sys.exit(2)
        if isinstance(exc, bases["ClickException"]):
            exc.show()
            sys.exit(exc.exit_code)
        _internal(exc)


def _internal(exc: Exception) -> None:
    """A runtime failure (exit 1): one line, or the traceback with MMESID_DEBUG=1."""
    if os.environ.get("MMESID_DEBUG"):
        raise exc
    print(
        f"mmesid: internal error: {type(exc).__name__}: {exc} (MMESID_DEBUG=1 shows the traceback)",
        file=sys.stderr,
    )
    sys.exit(1)
