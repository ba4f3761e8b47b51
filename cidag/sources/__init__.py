"""Built-in source types: manifest name -> module holding `probe(ctx)` (imported only when used)."""

BUILTIN_SOURCES: dict[str, str] = {
    "static": "cidag.sources.static",
    "exec": "cidag.sources.exec",
    "configdrive": "cidag.sources.configdrive",
    "nocloud": "cidag.sources.nocloud",
    "openstack-http": "cidag.sources.openstack",
    "ec2": "cidag.sources.ec2",
    "gce": "cidag.sources.gce",
    "azure": "cidag.sources.azure",
    "oracle": "cidag.sources.oracle",
    "hetzner": "cidag.sources.hetzner",
}
