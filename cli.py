"""The `charter` command line. Thin: parses arguments, calls dsl/ and interpreter/, formats output.

Imports of the front and back end happen inside the commands so that `charter --version` starts fast.
"""

from __future__ import annotations

import sys

import click

from dsl import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="charter")
def main() -> None:
    """Charter: declarative YAML workflows for AI agents, run durably and explainably.

    \b
    Examples:
      charter validate examples/
      charter graph examples/routing.yaml --format mermaid
    """


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github", "sarif"]),
    default="text",
    show_default=True,
    help="How to print the diagnostics.",
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) on warnings too.")
def validate(paths: tuple[str, ...], output_format: str, strict: bool) -> None:
    """Check workflow files and report every problem with file:line:col.

    PATHS may be files, directories (searched for *.yaml / *.yml files that declare
    `charter:`) or glob patterns. Exit status: 0 clean, 1 invalid, 2 usage error.

    \b
    Examples:
      charter validate flow.yaml
      charter validate workflows/ --format github
      charter validate 'flows/**/*.yaml' --format sarif > charter.sarif
    """
    from dsl import diagnostics
    from dsl.frontend import check_files, find_workflow_files

    files, missing = find_workflow_files(paths)
    if missing:
        raise click.UsageError("no workflow file matches: " + ", ".join(missing))
    diags = check_files(files)
    formatter = {
        "text": diagnostics.format_text,
        "json": diagnostics.format_json,
        "github": diagnostics.format_github,
        "sarif": diagnostics.format_sarif,
    }[output_format]
    text = formatter(diags)
    if text:
        click.echo(text)
    errors = sum(d.severity == diagnostics.Severity.ERROR for d in diags)
    warnings = len(diags) - errors
    if output_format == "text":
        summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
        click.echo(summary, err=True)
    sys.exit(1 if errors or (strict and warnings) else 0)


@main.command()
def schema() -> None:
    """Print the JSON Schema (2020-12) of a workflow file.

    \b
    Example:
      charter schema > charter.schema.json
    """
    import json

    from dsl.schema import generate_schema

    click.echo(json.dumps(generate_schema(), indent=2))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["mermaid", "dot", "json"]),
    default="mermaid",
    show_default=True,
)
def graph(file: str, output_format: str) -> None:
    """Render the execution graph of a workflow.

    \b
    Examples:
      charter graph examples/routing.yaml
      charter graph examples/parallel.yaml --format dot | dot -Tsvg > flow.svg
    """
    from dsl import diagnostics
    from dsl.frontend import compile_file
    from dsl.render import render

    graph_, diags = compile_file(file)
    errors = [d for d in diags if d.severity == diagnostics.Severity.ERROR]
    if graph_ is None or errors:
        click.echo(diagnostics.format_text(diags), err=True)
        sys.exit(1)
    click.echo(render(graph_, output_format))


if __name__ == "__main__":
    main()
