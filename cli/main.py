"""``retinasynth`` command line. Each command maps flags to the library's config and makes one call."""

from __future__ import annotations

import json
import sys
import warnings

import click

from retinasynth import __version__
from retinasynth.errors import RetinaSynthError


class _Group(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RetinaSynthError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; rerun with --resume to continue where it stopped.", err=True)
            sys.exit(130)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.secho(f"warning: {message}", fg="yellow", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="retinasynth")
def main() -> None:
    """retinasynth: synthetic fundus image / vessel mask pairs for retinal vessel segmentation."""
    warnings.showwarning = _show_warning


@main.group(cls=_Group)
def data() -> None:
    """Inspect dataset folders and make phantom data."""


@data.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--layout", default=None, help="Force a layout: drive, kaggle, chase, stare, hrf, generic.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_inspect(path: str, layout: str | None, as_json: bool) -> None:
    """Report a dataset folder's layout, splits, sizes, mask values, FOV and problems."""
    from retinasynth.data import DataConfig, format_report, inspect_dataset

    DataConfig(layout=layout)  # validates the layout name
    rep = inspect_dataset(path, layout=layout)
    click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep))
    if rep["problems"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
