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
@click.option("--write-ovf", type=click.Path(file_okay=False), help="Write Azure's ovf-env.xml into this directory.")
@click.option("--platform", type=click.Choice(["openstack", "ec2", "gce", "azure", "oracle", "hetzner"]),
              help="Make --write-sysfs write this platform's DMI instead of the fixture's.")
@click.option("--no-serve", is_flag=True, help="Only write the directories asked for, then exit.")
@click.option("-q", "--quiet", is_flag=True, help="Do not log requests on stderr.")
@click.option("--capacity", "concurrency", type=click.IntRange(1), metavar="N",
              help="Serve at most N requests at once (default: no limit).")
@click.option("--capacity-jitter", type=click.IntRange(0), metavar="N",
              help="Every second, serve N fewer at most (uniform in [0, N]).")
@click.option("--service-time", metavar="DURATION", help="Time each request holds its slot, e.g. 50ms.")
@click.option("--service-jitter", metavar="DURATION", help="Added to the service time: uniform in [0, DURATION].")
@click.option("--queue", type=click.IntRange(0), metavar="N",
              help="Requests that may wait for a slot; beyond them the answer is --busy-status.")
@click.option("--busy-status", type=click.Choice(["503", "429"]), help="Status of a refused request (default 503).")
@click.option("--retry-after", metavar="SECONDS|none", help="Retry-After of a refused request (default 1).")
@click.option("--client-rate", type=click.FloatRange(0, min_open=True), metavar="R",
              help="Token bucket per client address: R requests per second (429 beyond).")
@click.option("--client-burst", type=click.IntRange(1), metavar="N", help="Size of that bucket (default 10).")
def serve_metadata(fixture, host, port, faults, write_configdrive, write_nocloud, write_sysfs,
                   write_ovf, platform, no_serve, quiet, **capacity) -> None:
    """Serve OpenStack, EC2, GCE, Azure, Oracle and Hetzner metadata from FIXTURE (default: the shipped one).

    Prints its URL as the first line of stdout, logs requests on stderr, and
    stops on SIGINT or SIGTERM. The capacity options make it a loaded service
    (they override the fixture's `capacity:`).
    """
    import yaml

    from ..simulator import PLATFORM_DMI, Capacity, Fault, Simulator, load_fixture

    try:
        data = load_fixture(fixture)
        extra = [Fault.from_dict(yaml.safe_load(spec) or {}) for spec in faults]
        limits = _capacity(data.get("capacity") or {}, capacity)
        data["capacity"] = limits
        if platform:
            data["dmi"] = dict(PLATFORM_DMI[platform])
        Capacity.from_dict(limits)
    except (ValueError, yaml.YAMLError, TypeError) as exc:
        raise click.UsageError(str(exc).splitlines()[0]) from None

    def log(line: str) -> None:
        if not quiet:
            click.echo(f"serve-metadata: {line}", err=True)

    sim = Simulator(data, host=host, port=port, log=log)
    sim.faults.extend(extra)
    for option, writer in ((write_configdrive, sim.write_configdrive),
                           (write_nocloud, sim.write_nocloud), (write_sysfs, sim.write_sysfs),
                           (write_ovf, sim.write_ovf)):
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
        log(f"OpenStack at {sim.url}/openstack, EC2 at {sim.url}/latest, GCE at {sim.url}/computeMetadata/v1, "
            f"Azure at {sim.url}/metadata/instance and /machine, Oracle at {sim.url}/opc/v2, "
            f"Hetzner at {sim.url}/hetzner/v1; Ctrl-C stops")
        if sim.capacity.concurrency is not None:
            c = sim.capacity
            rate = f", about {c.rate:.0f} requests/s" if c.rate else ""
            log(f"capacity: {c.concurrency} at once, queue {c.queue}, then {c.status} "
                f"(Retry-After {c.retry_after}){rate}")
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("stopped")


def _capacity(fixture: dict, options: dict) -> dict:
    """The fixture's capacity with the command-line options laid over it."""
    out = dict(fixture)
    names = {"concurrency": "concurrency", "capacity_jitter": "concurrency_jitter",
             "service_time": "service_time", "service_jitter": "service_jitter", "queue": "queue",
             "busy_status": "status", "client_rate": "client_rate", "client_burst": "client_burst"}
    for option, key in names.items():
        if options.get(option) is not None:
            out[key] = int(options[option]) if option == "busy_status" else options[option]
    retry_after = options.get("retry_after")
    if retry_after is not None:
        if retry_after.lower() == "none":
            out["retry_after"] = None
        elif retry_after.isdigit():
            out["retry_after"] = int(retry_after)
        else:
            raise ValueError(f"--retry-after: expected whole seconds or 'none', not {retry_after!r}")
    return out
