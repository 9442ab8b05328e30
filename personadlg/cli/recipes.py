"""Recipe and registry commands: validate, ls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import out, print_json, table

LS_WHAT = ("methods", "metrics", "recipes", "formats", "filters")


def _listings() -> dict[str, Any]:
    """{name: (method, Listing)} of what methods add to `ls` (lora: adapters)."""
    from personadlg.registry import METHODS

    return {
        name: (method, listing)
        for method in METHODS.names()
        for name, listing in METHODS.get(method).listings.items()
    }


def validate(
    recipe: Annotated[
        str,
        typer.Argument(help="A YAML path or a bundled recipe name (see `personadlg ls recipes`)."),
    ],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="KEY=VALUE overrides with dotted keys, e.g. train.lr=3e-5.", show_default=False
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the resolved config as JSON.")
    ] = False,
) -> None:
    """Load and check a recipe (types, unknown keys, cross-field rules); train nothing.

    [bold]Examples[/]

      personadlg validate finetune/tiny
      personadlg validate recipes/finetune/gpt2.yaml train.lr=3e-5 model.max_length=256
    """
    from personadlg.config import dump_yaml, load_recipe, read_yaml, resolve_recipe, to_dict
    from personadlg.data.profile import is_profile_recipe, load_profile_recipe
    from personadlg.data.synth import is_synth_recipe, load_synth_recipe
    from personadlg.metrics.judge import describe_judge_recipe, is_judge_recipe
    from personadlg.models.api import is_api_recipe, load_api_recipe
    from personadlg.models.api.config import recipe_overrides

    raw = read_yaml(resolve_recipe(recipe))
    if is_api_recipe(raw):
        from personadlg.models.api.prompt import load_template

        acfg = load_api_recipe(
            recipe, recipe_overrides(overrides or [])
        )  # as `generate` reads them
        _, tag = load_template(acfg)
        data = {k: v for k, v in to_dict(acfg).items() if k != "source"}
        kind = f"method api, {acfg.client.model}, template {tag}, no training (use `personadlg generate`)"
    elif is_judge_recipe(raw):
        data, kind = describe_judge_recipe(recipe, overrides or [])
    elif is_profile_recipe(raw):
        pcfg = load_profile_recipe(recipe, overrides or [])
        data = {k: v for k, v in to_dict(pcfg).items() if k != "source"}
        kind = "profile inference"
    elif is_synth_recipe(raw):
        scfg = load_synth_recipe(recipe, overrides or [])
        data = {k: v for k, v in to_dict(scfg).items() if k != "source"}
        kind = f"synth, {len(scfg.target_list())} targets"
    else:
        from personadlg.models.backbone import check_model_types

        cfg = load_recipe(recipe, overrides or [])
        check_model_types(cfg.model)
        data, kind = cfg.to_dict(), f"method {cfg.method}"
    if json_out:
        print_json(data)
        return
    out.print(f"# {resolve_recipe(recipe)}: OK ({kind})")
    out.print(dump_yaml(data), end="", markup=False)


def ls(
    what: Annotated[
        str,
        typer.Argument(
            help="methods | metrics | recipes | formats | filters, or what a method lists "
            "(lora: adapters RUN)"
        ),
    ],
    run: Annotated[
        Optional[Path],
        typer.Argument(help="For what a method lists: its run dir.", show_default=False),
    ] = None,
    fields: Annotated[
        bool,
        typer.Option(
            "--fields", help="For methods: list the fields of each method's `model:` section."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List what personadlg knows by name.

    [bold]Examples[/]

      personadlg ls methods
      personadlg ls methods --fields
      personadlg ls recipes
      personadlg ls adapters runs/lora-tiny
    """
    from personadlg.errors import UsageError
    from personadlg.registry import FILTERS, FORMATS, METHODS, METRICS, did_you_mean

    listings = _listings()
    choices = [*LS_WHAT, *listings]
    if what not in choices:
        raise UsageError(
            f"cannot list '{what}'{did_you_mean(what, choices)}; choose one of {', '.join(choices)}"
        )
    if what in listings:
        method, listing = listings[what]
        if run is None:
            raise UsageError(f"ls {what} needs {listing.argument} ({method})")
        result = listing.read(run)
        if json_out:
            print_json(result.data)
        else:
            out.print(table(result.title, result.columns, result.rows))
        return
    if run is not None:
        raise UsageError(f"ls {what} takes no second argument (got {run})")
    if what == "recipes":
        from personadlg.config import bundled_recipes, recipe_summary, recipes_dir

        rows = [
            [name, recipe_summary(recipes_dir() / f"{name}.yaml")] for name in bundled_recipes()
        ]
        if json_out:
            print_json([{"name": n, "summary": s} for n, s in rows])
        else:
            out.print(
                table(
                    f"recipes ({recipes_dir()})",
                    ["name", "what it reproduces"],
                    rows,
                    justify_numbers=False,
                )
            )
        return
    registry = {"methods": METHODS, "metrics": METRICS, "formats": FORMATS, "filters": FILTERS}[
        what
    ]
    entries = registry.entries()
    if what == "methods":
        from personadlg.registry import method_facts

        facts = {e.name: method_facts(e.name) for e in entries}
    if json_out:
        print_json(
            [
                {"name": e.name, "help": e.help, "available": e.available, **_shown(e.meta)}
                if what != "methods"
                else {"name": e.name, "available": e.available, **facts[e.name]}
                for e in entries
            ]
        )
        return
    extra = {"metrics": "higher is better", "filters": "default"}.get(what)
    rows = []
    for e in entries:
        row = [e.name, facts[e.name]["help"] if what == "methods" else e.help]
        if what == "metrics":
            row.append("yes" if e.meta.get("higher_is_better") else "no")
        elif what == "filters":
            row.append("on" if e.meta.get("default") else "off")
        row.append("yes" if e.available else "not yet")
        rows.append(row)
    cols = ["name", "what", *([extra] if extra else []), "available"]
    out.print(table(what, cols, rows, justify_numbers=False))
    if what == "methods" and fields:
        from personadlg.config import field_help

        for e in entries:
            cls = METHODS.get(e.name).config_cls
            if cls is None:
                continue
            frows = [[n, t, repr(d), h] for n, t, d, h in field_help(cls)]
            out.print(
                table(
                    f"{e.name}: model.*",
                    ["field", "type", "default", "help"],
                    frows,
                    justify_numbers=False,
                )
            )


def _shown(meta: dict[str, Any]) -> dict[str, Any]:
    """An entry's meta as `ls --json` shows it (a metric's factory params are not listed)."""
    return {k: v for k, v in meta.items() if k != "params"}


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Recipes")(validate)
    app.command(rich_help_panel="Recipes")(ls)
