"""`cidag compile`: write the compiled-plan cache `cidag run` loads (at image build time)."""
from __future__ import annotations

import pickle
from pathlib import Path

import click

from .common import manifest_options, root_option, verbose_option


@click.command()
@manifest_options
@root_option("Root whose cache to write (ROOT/var/cache/cidag).")
@verbose_option
def compile(sources_path, modules_path, config_dir, root, verbose) -> int:  # noqa: A001 - the command's name
    """Compile the manifests and write the compiled-plan cache that `cidag run` loads
    instead of compiling (docs/engine.md). Run it with the environment the systemd
    unit has: the values of the manifests' ${VAR}s are part of the cache's key."""
    from ..errors import UsageError
    from ..plancache import SecretsInManifests, compile_to_cache

    try:
        path = compile_to_cache(Path(root).resolve(), sources_path, modules_path, config_dir)
    except SecretsInManifests as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the compiled-plan cache: {exc.strerror or exc}"
                         + (f": {exc.filename}" if getattr(exc, "filename", None) else "")) from None
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise UsageError(f"a type in the manifests cannot be cached ({exc}); `cidag run` compiles each time") from None
    click.echo(f"compiled plan: {path}")
    return 0
