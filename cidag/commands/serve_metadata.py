"""`cidag serve-metadata`: the loopback metadata simulator on the command line."""
from __future__ import annotations

import signal
import sys
import threading

import click


@click.command("serve-metadata")
@click.argument("fixture", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it loopback).")
@click.option("--port", default=0, type=click.IntRange(0, 65535), show_default=True,
              help="Port to bind; 0 picks a free one.")
@click.option("--fault", "faults", multiple=True, metavar="YAML",
              help="Add a fault, e.g. --fault '{path: /openstack*, delay: 2s}' (repeatable).")
@click.option("--write-configdrive", type=click.Path(file_okay=False), help="Write a config drive tree here.")
@click.option("--write-nocloud", type=click.Path(file_okay=False), help="Write a NoCloud seed directory here.")
@click.option("--write-sysfs", type=click.Path(file_okay=False),
              help="Write the fixture's DMI fields as DIR/class/dmi/id/* (a fake sysfs root).")
@click.option("--no-serve", is_flag=True, help="Only write the directories asked for, then exit.")
@click.option("-q", "--quiet", is_flag=True, help="Do not log requests on stderr.")
def serve_metadata(fixture, host, port, faults, write_configdrive, write_nocloud, write_sysfs,
                   no_serve, quiet) -> None:
    """Serve OpenStack- and EC2-shaped metadata from FIXTURE (default: the shipped one).

    Prints its URL as the first line of stdout, logs requests on stderr, and
    stops on SIGINT or SIGTERM.
    """
    import yaml

    from ..simulator import Fault, Simulator, load_fixture

    try:
        data = load_fixture(fixture)
        extra = [Fault.from_dict(yaml.safe_load(spec) or {}) for spec in faults]
    except (ValueError, yaml.YAMLError, TypeError) as exc:
        raise click.UsageError(str(exc).splitlines()[0]) from None

    def log(line: str) -> None:
        if not quiet:
            click.echo(f"serve-metadata: {line}", err=True)

    sim = Simulator(data, host=host, port=port, log=log)
    sim.faults.extend(extra)
    for option, writer in ((write_configdrive, sim.write_configdrive),
                           (write_nocloud, sim.write_nocloud), (write_sysfs, sim.write_sysfs)):
        if option:
            log(f"wrote {writer(option)}")
    if no_serve:
        return
    try:
        sim.start()
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(sim.url)
        sys.stdout.flush()
        log(f"OpenStack at {sim.url}/openstack, EC2 at {sim.url}/latest; Ctrl-C stops")
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("stopped")
