"""`cidag clean`: empty the state dir (and, as asked, seed, host keys, configs, machine-id) so the next boot is a first boot.

The work is cidag/clean.py's; this prints what was done. Exit 0 when everything asked
was done, 1 when something could not be removed (one line each), 2 on a usage error.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import click

from ..clean import CONFIG_CHOICES, clean as clean_root
from ..errors import UsageError
from .common import state_options


@click.command()
@state_options("Target root to clean (an image's tree before capture).")
@click.option("-l", "--logs", is_flag=True,
              help="Accepted for cloud-init's command line: run records are always removed.")
@click.option("-s", "--seed", is_flag=True, help="Also remove the NoCloud seed (ROOT/var/lib/cloud/seed/nocloud).")
@click.option("--host-keys", is_flag=True, help="Also remove the SSH host keys (ROOT/etc/ssh/ssh_host_*key*).")
@click.option("--machine-id", is_flag=True,
              help="Set ROOT/etc/machine-id to 'uninitialized' (systemd makes a new one at the next boot); "
                   "removed where the root has no systemd.")
@click.option("-c", "--configs", multiple=True, type=click.Choice(CONFIG_CHOICES), metavar="KIND",
              help=f"Also remove the files cidag's modules generated, of this kind ({', '.join(CONFIG_CHOICES)}); repeatable.")
@click.option("-r", "--reboot", is_flag=True, help="Reboot afterwards (only with --root /).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but problems.")
@click.pass_context
def clean(ctx: click.Context, state_dir: str | None, root: str, logs: bool, seed: bool, host_keys: bool,
          machine_id: bool, configs: tuple[str, ...], reboot: bool, quiet: bool) -> None:
    """Reset this machine (or --root) so its next boot is a first boot: markers, run records,
    instance data and login-identity are removed; options remove more."""
    if reboot and os.path.realpath(root) != "/":
        raise UsageError("--reboot: only with --root / (this machine)")
    result = clean_root(root, state_dir, seed=seed, host_keys=host_keys, machine_id=machine_id, configs=configs)
    if not quiet:
        for path in result.removed:
            click.echo(f"removed {path}")
        for path in result.written:
            click.echo(f"written {path}")
    for line in result.problems:
        click.echo(f"cidag: clean: {line}", err=True)
    if result.problems:
        ctx.exit(1)
    if reboot:
        argv = ["systemctl", "reboot"] if shutil.which("systemctl") else ["shutdown", "-r", "now"]
        rc = subprocess.call(argv)
        if rc != 0:
            click.echo(f"cidag: clean: {' '.join(argv)} exited {rc}", err=True)
            ctx.exit(1)
