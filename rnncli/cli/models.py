"""``rnncli export``, ``rnncli info`` and ``rnncli devices``: what a model is, where it
goes, what it runs on (registered on the group in main.py)."""

from __future__ import annotations

import click

from rnncli.cli.context import RnnCliCommand
from rnncli.cli.explain_report import echo_written
from rnncli.cli.options import model_option


@click.command(cls=RnnCliCommand)
@model_option
@click.option("-o", "--out", "dest", required=True, metavar="DEST",
              help="Directory to write the SavedModel to.")
@click.option("--force", is_flag=True, help="Replace DEST if it already holds a SavedModel.")
def export(model_dir, dest, force):
    """Export a TensorFlow SavedModel for TF Serving.

    Its 'serve' endpoint and 'serving_default' signature take a flat batch of raw strings
    (shape [n]) and return the positive-class probability (shape [n, 1]), or for a model
    of k > 2 classes every class's probability (shape [n, k], in the order 'rnncli info'
    lists the classes).
    """
    from rnncli.core import fsio
    from rnncli.render import output
    from rnncli.training.export import export_saved_model

    path = export_saved_model(model_dir, dest, force=force)
    if fsio.replaces_cwd(path):
        output.tell(output.err_console(), fsio.CWD_NOTE)
    echo_written(path, "wrote SavedModel to")


@click.command(cls=RnnCliCommand)
@model_option
@click.option("-f", "--format", "fmt", type=click.Choice(["auto", "table", "json"]),
              default="auto", show_default=True)
def info(model_dir, fmt):
    """What a model is: network, vocabulary, labels, data and figures."""
    from rnncli.modeldir import artifacts
    from rnncli.render import output, tables

    manifest = artifacts.check_model_dir(model_dir)  # a broken model.keras is exit 4 here too
    tables.render_info(manifest, output.resolve_format(fmt, piped="json"))


@click.command(cls=RnnCliCommand)
@click.option("-f", "--format", "fmt", type=click.Choice(["auto", "table", "json"]),
              default="auto", show_default=True)
def devices(fmt):
    """List the devices TensorFlow can run on, with their --device names."""
    from rnncli.network.runtime import list_devices
    from rnncli.render import output, tables

    tables.render_rows(list_devices(), output.resolve_format(fmt, piped="json"))
