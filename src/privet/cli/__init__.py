"""The ``privet`` command: one Typer app, one module per command group. Thin: parse, call, print."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

import privet
from privet import log
from privet.cli import demo, desensitize, dp, files, fl, keys, ledger, model, serve, train
from privet.cli.common import OPTIONS
from privet.config import load_settings
from privet.errors import PrivetError

app = typer.Typer(
    name="privet",
    help="Train and serve AI models on sensitive data without exposing it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(model.app, name="model")
app.add_typer(ledger.app, name="ledger")
app.add_typer(dp.app, name="dp")
app.add_typer(fl.app, name="fl")
app.add_typer(serve.admin, name="admin")
app.add_typer(serve.audit, name="audit")
app.command("serve")(serve.serve)
desensitize.register(app)
app.command()(files.encrypt)
app.command()(files.decrypt)
app.command()(demo.demo)
app.command()(train.train)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"privet {privet.__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    OPTIONS.debug, OPTIONS.quiet = debug, quiet
    log.configure("DEBUG" if debug else load_settings().log_level)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and an exit code, never a traceback."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except ClickException as exc:
        hint = "See --help for usage"
        sys.stderr.write(f"error: {' '.join(exc.format_message().split()).rstrip('.')}. {hint}.\n")
        code = exc.exit_code
    except PrivetError as exc:
        if debug:
            raise
        sys.stderr.write(exc.one_line() + "\n")
        code = exc.exit_code
    except typer.Abort:
        sys.stderr.write("error: aborted. Nothing was changed by the interrupted step.\n")
        code = 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted. Writes are atomic: re-run the command.\n")
        code = 130
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(
            f"error: internal error ({type(exc).__name__}). Re-run with --debug and report it with the output.\n"
        )
        code = 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
