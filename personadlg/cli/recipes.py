"""Recipe and registry commands: validate, ls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import out, print_json, table

LS_WHAT = ("methods", "metrics", "recipes", "formats", "filters", "adapters")


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

    raw = read_yaml(resolve_recipe(recipe))
    if is_api_recipe(raw):
        from personadlg.models.api.prompt import load_template

        acfg = load_api_recipe(recipe, overrides or [])
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
        str, typer.Argument(help="methods | metrics | recipes | formats | filters | adapters RUN")
    ],
    run: Annotated[
        Optional[Path],
        typer.Argument(help="For adapters: a lora run dir (or its final/).", show_default=False),
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

    if what not in LS_WHAT:
        raise UsageError(
            f"cannot list '{what}'{did_you_mean(what, LS_WHAT)}; choose one of {', '.join(LS_WHAT)}"
        )
    if what == "adapters":
        _ls_adapters(run, json_out)
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
    if json_out:
        print_json(
            [
                {
                    "name": e.name,
                    "help": e.help,
                    "available": e.available,
                    **{k: v for k, v in e.meta.items() if k != "config"},
                }
                for e in entries
            ]
        )
        return
    extra = {"metrics": "higher is better", "filters": "default"}.get(what)
    rows = []
    for e in entries:
        row = [e.name, e.help]
        if what == "metrics":
            row.append("yes" if e.meta.get("higher_is_better") else "no")
        elif what == "filters":
            row.append("on" if e.meta.get("default") else "off")
        row.append("yes" if e.available else "not yet")
        rows.append(row)
    cols = ["name", "what", *([extra] if extra else []), "available"]
    out.print(table(what, cols, rows, justify_numbers=False))
    if what == "methods" and fields:
        from personadlg.config import ConfigError, field_help, method_config_class

        for e in entries:
            try:
                cls = method_config_class(e.name)
            except ConfigError:
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


_EXPECTED = "a lora run dir (or its final/) whose stage users has run: RUN/adapters/index.json"


def _what_it_is(path: Path) -> str:
    """What PATH is, in words, for an error about what was expected instead."""
    import yaml

    if not path.exists():
        return "no such file or directory"
    if not path.is_dir():
        return "a file, not a directory"
    for cfg in (path / "config.yaml", path / "final" / "config.yaml"):
        if cfg.is_file():
            try:
                recipe = yaml.safe_load(cfg.read_text())
                method = recipe["method"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):
                return f"a directory with an unreadable {cfg.name}"
            where = "a checkpoint" if cfg.parent == path else "a run"
            if method == "lora":
                return (
                    f"{where} of a lora run whose stage users has not run (no adapters/index.json)"
                )
            return f"{where} of method {method!r}, not lora"
    return "a directory that holds no personadlg run (no config.yaml, no final/)"


def _ls_adapters(run: Path | None, json_out: bool) -> None:
    """The user adapters of a lora run: one row per user from adapters/index.json."""
    from personadlg.errors import UsageError
    from personadlg.models.lora.adapters import INDEX_FILE, adapters_of, read_index

    if run is None:
        raise UsageError(
            "ls adapters needs a lora run dir, e.g. personadlg ls adapters runs/lora-tiny"
        )
    adapters = adapters_of(run)
    if not (adapters / INDEX_FILE).is_file():
        raise UsageError(f"{run}: {_what_it_is(run)}; `ls adapters` expects {_EXPECTED}")
    index = read_index(adapters)
    users = index["users"]
    if json_out:
        print_json({"adapters": str(adapters), "base": index.get("base"), "users": users})
        return
    rows = [
        [
            uid,
            e["dir"],
            e["examples"],
            e["steps"],
            f"{e['valid_loss_before']:.4f}",
            f"{e['valid_loss_after']:.4f}",
            f"{e.get('size_bytes', 0) / 1024:,.0f}",
        ]
        for uid, e in users.items()
    ]
    base = index.get("base") or {}
    out.print(
        table(
            f"{len(users)} adapter(s) in {adapters} (base {base.get('ref', '?')})",
            ["user", "dir", "turns", "steps", "valid loss before", "after", "KiB"],
            rows,
        )
    )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Recipes")(validate)
    app.command(rich_help_panel="Recipes")(ls)
