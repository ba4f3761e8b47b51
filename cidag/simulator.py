"""A loopback metadata simulator: OpenStack, EC2, GCE, Azure, Oracle and Hetzner APIs from one fixture, with faults.

    with Simulator(load_fixture(None)) as sim:      # 127.0.0.1, a free port
        sim.add_fault("/openstack*", delay=1.0)
        ... probe sim.url ...
        sim.passwords                                # what was POSTed

GCE is served under /computeMetadata/v1 (header `Metadata-Flavor: Google`
required), Azure's IMDS under /metadata/instance (`Metadata: true`) and its
wireserver under /machine (goal state, Health reports kept in `reported`),
Oracle under /opc/v2 (`Authorization: Bearer Oracle`), Hetzner under
/hetzner/v1; a request without the platform's header is refused, as the
platform does. `PLATFORM_DMI` holds the DMI each platform shows.
A NoCloud seed is served under /nocloud/ (a `seedfrom` URL). It can also
write the same metadata as a config drive, a NoCloud seed and a
fake DMI tree. Faults (see `Fault`) match request paths with fnmatch globs.
`Capacity` makes it a loaded service: so many requests served at once, each
taking a service time, a bounded queue, 503/429 with Retry-After beyond it,
and a token bucket per client address (as EC2's IMDS throttles per instance).

Connections are kept alive (HTTP/1.1), one thread each: the fault machinery
(stalls, streamed bodies, cut bodies) is blocking code, and a thread per
connection holds a fleet of 1,000 concurrent clients on a 2-core machine
(bench/fleet.py measures it).
"""
from __future__ import annotations

import copy
import fnmatch
import json
import random
import secrets
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl

from .durations import parse_duration

DEFAULT_FIXTURE = Path(__file__).parent / "data" / "metadata-fixture.yaml"
EC2_PREFIX = "/latest"
PASSWORD_VERSION = "2013-04-04"
ENDLESS_LIMIT = 1 << 30  # an endless body still ends after 1 GiB, in case no client hangs up
_CAPACITY_KEYS = {"concurrency", "concurrency_jitter", "service_time", "service_jitter", "queue",
                  "status", "retry_after", "client_rate", "client_burst"}
MAX_BODY = 1 << 20  # a request body larger than this closes the connection after the answer
FIXTURE_KEYS = {"instance", "openstack", "ec2", "gce", "azure", "oracle", "hetzner", "dmi", "faults", "capacity"}
# The DMI fields each platform's guests show (what platform_check.py looks for), for --platform.
PLATFORM_DMI = {
    "openstack": {"sys_vendor": "OpenStack Foundation", "product_name": "OpenStack Nova"},
    "ec2": {"sys_vendor": "Amazon EC2", "product_name": "m5.large"},
    "gce": {"sys_vendor": "Google", "product_name": "Google Compute Engine"},
    "azure": {"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine",
              "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77"},
    "oracle": {"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX + PIIX, 1996)",
               "chassis_asset_tag": "OracleCloud.com"},
    "hetzner": {"sys_vendor": "Hetzner", "product_name": "vServer"},
}
_FAULT_KEYS = {"path", "method", "delay", "jitter", "stall", "close_mid_body", "reset", "status",
               "first", "body", "size", "redirect", "content_type"}


@dataclass
class Fault:
    """One injected fault for paths matching `path` (fnmatch glob; `method` optional).

    delay/jitter: seconds before answering (jitter adds uniform [0, jitter]);
    stall: accept and never answer; close_mid_body: announce the full length, send half, close;
    reset: read the request, answer nothing and reset the connection (TCP RST);
    status: answer this status (e.g. 500, 404); body: a literal body, or "endless" / "huge"
    (`size` bytes, announced); redirect: a Location to answer 302 with;
    first: apply to the first N matching requests only (then the path behaves).
    """

    path: str = "*"
    method: str | None = None
    delay: float = 0.0
    jitter: float = 0.0
    stall: bool = False
    close_mid_body: bool = False
    reset: bool = False
    status: int | None = None
    first: int | None = None
    body: str | None = None
    size: int = 32 << 20
    redirect: str | None = None
    content_type: str = "text/plain"
    hits: int = field(default=0, compare=False)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "Fault":
        """Build from a fixture entry; raise ValueError naming an unknown key or bad value."""
        kw = _keywords(spec, _FAULT_KEYS, ("delay", "jitter"), f"fault {dict(spec)!r}")
        if kw.get("method"):
            kw["method"] = str(kw["method"]).upper()
        return cls(**kw)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(path, self.path)


@dataclass
class Capacity:
    """How much the service can take; every request (faults apart) goes through it.

    concurrency: requests served at once (None: no limit); concurrency_jitter:
    every second the limit is redrawn in [concurrency - jitter, concurrency];
    service_time/service_jitter: seconds each request holds its slot (plus
    uniform [0, jitter]); queue: requests that may wait for a slot, beyond
    which the answer is `status` (503 or 429) with `Retry-After: retry_after`
    (None: no header); client_rate/client_burst: a token bucket per client
    address (tokens per second, bucket size), 429 when empty.
    """

    concurrency: int | None = None
    concurrency_jitter: int = 0
    service_time: float = 0.0
    service_jitter: float = 0.0
    queue: int = 0
    status: int = 503
    retry_after: int | None = 1
    client_rate: float | None = None
    client_burst: int = 10

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "Capacity":
        """Build from a fixture's `capacity:`; raise ValueError naming an unknown key or bad value."""
        cap = cls(**_keywords(spec, _CAPACITY_KEYS, ("service_time", "service_jitter"), "capacity"))
        if cap.concurrency is not None and (not isinstance(cap.concurrency, int) or cap.concurrency < 1):
            raise ValueError(f"capacity: concurrency must be a positive integer, not {cap.concurrency!r}")
        if cap.status not in (429, 503):
            raise ValueError(f"capacity: status must be 429 or 503, not {cap.status!r}")
        if not isinstance(cap.queue, int) or cap.queue < 0:
            raise ValueError(f"capacity: queue must be an integer >= 0, not {cap.queue!r}")
        if cap.client_rate is not None and not cap.client_rate > 0:
            raise ValueError(f"capacity: client_rate must be > 0, not {cap.client_rate!r}")
        return cap

    @property
    def rate(self) -> float | None:
        """Requests per second it can answer (concurrency / service time); None if unbounded."""
        if self.concurrency is None or self.service_time + self.service_jitter / 2 <= 0:
            return None
        return self.concurrency / (self.service_time + self.service_jitter / 2)


class _Gate:
    """The service's slots and queue (threads wait on a condition, first come first served)."""

    def __init__(self, cap: Capacity) -> None:
        self.cap = cap
        self.cond = threading.Condition()
        self.busy = self.waiting = 0
        self.peak_busy = self.peak_waiting = 0
        self.limit = cap.concurrency or 0
        self._drawn = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time)

    def throttled(self, client: str) -> bool:
        """Take a token from `client`'s bucket; True when it is empty."""
        if self.cap.client_rate is None:
            return False
        now = time.monotonic()
        with self.cond:
            tokens, then = self._buckets.get(client, (float(self.cap.client_burst), now))
            tokens = min(float(self.cap.client_burst), tokens + (now - then) * self.cap.client_rate)
            empty = tokens < 1
            self._buckets[client] = (tokens if empty else tokens - 1, now)
        return empty

    def enter(self, stopping: threading.Event) -> bool:
        """Take a slot, waiting in the queue if there is room; False when refused."""
        if self.cap.concurrency is None:
            return True
        with self.cond:
            self._redraw()
            if self.busy < self.limit and self.waiting == 0:
                self.busy += 1
                self.peak_busy = max(self.peak_busy, self.busy)
                return True
            if self.waiting >= self.cap.queue:
                return False
            self.waiting += 1
            self.peak_waiting = max(self.peak_waiting, self.waiting)
            try:
                while self.busy >= self.limit:
                    if stopping.is_set():
                        return False
                    self.cond.wait(0.2)
                    self._redraw()
            finally:
                self.waiting -= 1
            self.busy += 1
            self.peak_busy = max(self.peak_busy, self.busy)
            return True

    def leave(self) -> None:
        if self.cap.concurrency is None:
            return
        with self.cond:
            self.busy -= 1
            self.cond.notify()

    def service_time(self) -> float:
        return self.cap.service_time + (random.uniform(0, self.cap.service_jitter) if self.cap.service_jitter else 0.0)

    def _redraw(self) -> None:
        if not self.cap.concurrency_jitter:
            return
        now = time.monotonic()
        if now - self._drawn >= 1.0:
            self._drawn = now
            old = self.limit
            self.limit = max(1, self.cap.concurrency - random.randint(0, self.cap.concurrency_jitter))
            if self.limit > old:
                self.cond.notify(self.limit - old)


class Simulator:
    """A metadata server (OpenStack, EC2, GCE, Azure, Oracle, Hetzner) on `host` (127.0.0.1)
    and `port` (0 = a free one)."""

    def __init__(self, fixture: Mapping | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 log=None, capacity: Capacity | None = None) -> None:
        self.fixture = copy.deepcopy(dict(fixture if fixture is not None else load_fixture(None)))
        self.host, self.port = host, port
        self.faults: list[Fault] = [Fault.from_dict(f) for f in self.fixture.get("faults") or []]
        self.capacity = capacity or Capacity.from_dict(self.fixture.get("capacity") or {})
        self.gate = _Gate(self.capacity)
        self.passwords: list[bytes] = []
        self.reported: list[dict] = []  # Azure Health reports POSTed to the wireserver
        self.requests: list[tuple[float, str, str, int]] = []  # (t, method, path, status)
        self.clients: list[str] = []  # the client address of each entry of `requests`
        self.connections = 0  # connections accepted
        self.open_connections = self.peak_connections = 0
        self.log = log  # a callable taking one line, or None
        self.stopping = threading.Event()
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        os_ = self.fixture.get("openstack") or {}
        self._password: bytes | None = (
            str(os_["password"]).encode() if os_.get("password") is not None else None
        )

    # -- life cycle

    def start(self) -> "Simulator":
        """Bind and serve in a background thread; `url` is valid afterwards."""
        server = _Server((self.host, self.port), _Handler)
        server.sim = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="cidag-simulator")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled and delayed requests are released at once."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Simulator":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_fault(self, path: str = "*", **spec: Any) -> Fault:
        """Append a fault (keys as in Fault) and return it."""
        fault = Fault.from_dict({"path": path, **spec})
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # -- the documents

    @property
    def instance(self) -> dict:
        return self.fixture.get("instance") or {}

    def openstack_meta(self) -> dict:
        """meta_data.json as OpenStack renders it."""
        inst = self.instance
        keys = list(inst.get("public-keys") or [])
        meta: dict[str, Any] = {
            "uuid": str(inst.get("instance-id", "")),
            "hostname": inst.get("hostname"),
            "name": inst.get("hostname"),
            "public_keys": {f"key{i}": k for i, k in enumerate(keys)},
            "keys": [{"name": f"key{i}", "type": "ssh", "data": k} for i, k in enumerate(keys)],
            "availability_zone": inst.get("availability-zone"),
            "launch_index": inst.get("launch-index", 0),
        }
        if inst.get("admin-password") is not None:
            meta["admin_pass"] = str(inst["admin-password"])
        meta.update((self.fixture.get("openstack") or {}).get("meta_data") or {})
        return {k: v for k, v in meta.items() if v is not None}

    def openstack_documents(self) -> dict[str, bytes]:
        """name -> body of the documents under openstack/VERSION/ (absent ones left out)."""
        os_ = self.fixture.get("openstack") or {}
        docs = {"meta_data.json": _json(self.openstack_meta())}
        if self.instance.get("user-data") is not None:
            docs["user_data"] = _bytes(self.instance["user-data"])
        if self.instance.get("vendor-data") is not None:
            docs["vendor_data.json"] = _json({"cloud-init": _text(self.instance["vendor-data"])})
        if os_.get("network_data") is not None:
            docs["network_data.json"] = _json(os_["network_data"])
        return docs

    def ec2_meta(self) -> dict[str, str]:
        """meta-data path -> value (public keys as public-keys/N/openssh-key)."""
        inst, ec2 = self.instance, self.fixture.get("ec2") or {}
        meta = {
            "instance-id": str(ec2.get("instance-id", inst.get("instance-id", ""))),
            "local-hostname": inst.get("hostname"),
            "hostname": inst.get("hostname"),
            "local-ipv4": inst.get("local-ipv4"),
            "placement/availability-zone": inst.get("availability-zone"),
            "ami-launch-index": str(inst.get("launch-index", 0)),
        }
        for i, key in enumerate(inst.get("public-keys") or []):
            meta[f"public-keys/{i}/openssh-key"] = key
        return {k: str(v) for k, v in meta.items() if v is not None}

    # -- writers

    def write_configdrive(self, directory: str | Path) -> Path:
        """Write an OpenStack config drive tree (openstack/latest and 2013-04-04) under `directory`."""
        base = Path(directory)
        for version in ("latest", PASSWORD_VERSION):
            vdir = base / "openstack" / version
            vdir.mkdir(parents=True, exist_ok=True)
            for name, body in self.openstack_documents().items():
                (vdir / name).write_bytes(body)
        return base

    def nocloud_documents(self) -> dict[str, bytes]:
        """A NoCloud seed: meta-data, user-data, vendor-data, network-config (absent ones left out)."""
        import yaml

        inst = self.instance
        meta = {"instance-id": str(inst.get("instance-id", "")), "local-hostname": inst.get("hostname"),
                "public-keys": list(inst.get("public-keys") or [])}
        if inst.get("availability-zone"):
            meta["availability-zone"] = inst["availability-zone"]
        docs = {"meta-data": yaml.safe_dump(meta, sort_keys=False).encode()}
        for name in ("user-data", "vendor-data"):
            if inst.get(name) is not None:
                docs[name] = _bytes(inst[name])
        if inst.get("network-config") is not None:
            docs["network-config"] = yaml.safe_dump(inst["network-config"], sort_keys=False).encode()
        return docs

    def write_nocloud(self, directory: str | Path) -> Path:
        """Write a NoCloud seed (meta-data, user-data, vendor-data, network-config) into `directory`."""
        base = Path(directory)
        base.mkdir(parents=True, exist_ok=True)
        for name, body in self.nocloud_documents().items():
            (base / name).write_bytes(body)
        return base

    def write_ovf(self, directory: str | Path) -> Path:
        """Write Azure's ovf-env.xml into `directory` (what the provisioning disk holds)."""
        base = Path(directory)
        base.mkdir(parents=True, exist_ok=True)
        (base / "ovf-env.xml").write_bytes(self.azure_ovf())
        return base

    def write_sysfs(self, directory: str | Path) -> Path:
        """Write the fixture's `dmi` fields to DIRECTORY/class/dmi/id/ (a fake sysfs root)."""
        base = Path(directory) / "class" / "dmi" / "id"
        base.mkdir(parents=True, exist_ok=True)
        for name, value in (self.fixture.get("dmi") or {}).items():
            if "/" in str(name) or str(name).startswith("."):
                raise ValueError(f"dmi field {name!r} is not a file name")
            (base / str(name)).write_text(f"{value}\n")
        return Path(directory)

    # -- request handling (called by _Handler)

    def _active_faults(self, method: str, path: str) -> list[Fault]:
        out = []
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.first is None or fault.hits <= fault.first:
                        out.append(fault)
        return out

    def _route(self, handler: "_Handler", method: str, path: str) -> tuple[int, bytes, dict]:
        os_ = self.fixture.get("openstack") or {}
        ec2 = self.fixture.get("ec2") or {}
        parts = [p for p in path.split("/") if p]
        if path == "/":
            names = (["latest"] if ec2.get("enabled", True) else []) + (
                ["openstack"] if os_.get("enabled", True) else [])
            return 200, _lines(names), {}
        if parts and parts[0] == "openstack" and os_.get("enabled", True):
            return self._openstack(handler, method, parts[1:], os_)
        if parts and parts[0] == "latest" and ec2.get("enabled", True):
            return self._ec2(handler, method, parts[1:], ec2)
        section = {"computeMetadata": "gce", "metadata": "azure", "machine": "azure", "opc": "oracle",
                   "hetzner": "hetzner"}.get(parts[0] if parts else "")
        if section and (self.fixture.get(section) or {}).get("enabled", True):
            query = dict(parse_qsl(handler.path.partition("?")[2]))
            return getattr(self, f"_{section}")(handler, method, parts, query)
        if len(parts) == 2 and parts[0] == "nocloud" and method == "GET":
            seed = self.nocloud_documents()
            return (200, seed[parts[1]], {}) if parts[1] in seed else (404, b"Not Found\n", {})
        return 404, b"Not Found\n", {}

    def _openstack(self, handler, method, parts, os_) -> tuple[int, bytes, dict]:
        versions = [str(v) for v in os_.get("versions") or ["latest"]]
        if not parts:
            return 200, _lines(versions), {}
        if parts[0] not in versions or len(parts) != 2:
            return 404, b"Not Found\n", {}
        name = parts[1]
        if name == "password":
            if method == "POST":
                body = handler.read_body(limit=1024)
                with self._lock:
                    if self._password is not None:
                        return 409, b"Conflict: a password is already set\n", {}
                    self._password = body
                    self.passwords.append(body)
                if self.log:
                    self.log(f"password posted ({len(body)} bytes)")
                return 200, b"", {}
            return 200, self._password or b"", {}
        if method != "GET":
            return 405, b"Method Not Allowed\n", {}
        docs = self.openstack_documents()
        if name not in docs:
            return 404, b"Not Found\n", {}
        ctype = "application/json" if name.endswith(".json") else "text/plain"
        return 200, docs[name], {"Content-Type": ctype}

    def _ec2(self, handler, method, parts, ec2) -> tuple[int, bytes, dict]:
        if parts == ["api", "token"]:
            if method != "PUT":
                return 405, b"Method Not Allowed\n", {}
            if not handler.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
                return 400, b"Missing or invalid TTL header\n", {}
            token = secrets.token_urlsafe(32)
            with self._lock:
                self._tokens.add(token)
            return 200, token.encode(), {"X-aws-ec2-metadata-token-ttl-seconds":
                                         handler.headers["X-aws-ec2-metadata-token-ttl-seconds"]}
        if method != "GET":
            return 405, b"Method Not Allowed\n", {}
        token = handler.headers.get("X-aws-ec2-metadata-token")
        with self._lock:
            valid = token in self._tokens
        if not valid and not ec2.get("imdsv1", False):
            return 401, b"Unauthorized\n", {}
        if parts == ["user-data"]:
            data = self.instance.get("user-data")
            return (404, b"Not Found\n", {}) if data is None else (200, _bytes(data), {})
        if not parts or parts[0] != "meta-data":
            return 404, b"Not Found\n", {}
        meta = self.ec2_meta()
        key = "/".join(parts[1:])
        if key in meta:
            return 200, meta[key].encode(), {}
        if key == "public-keys":
            n = len(self.instance.get("public-keys") or [])
            return (200, _lines(f"{i}=key{i}" for i in range(n)), {}) if n else (404, b"Not Found\n", {})
        # A directory listing, as IMDS gives for meta-data/ and placement/.
        prefix = f"{key}/" if key else ""
        children = sorted({k[len(prefix):].split("/")[0] + ("/" if "/" in k[len(prefix):] else "")
                           for k in meta if k.startswith(prefix)})
        return (200, _lines(children), {}) if children else (404, b"Not Found\n", {})

    # -- GCE, Azure, Oracle, Hetzner

    def gce_tree(self) -> dict:
        """The GCE metadata tree: instance/ and project/ (keys as `user:key` lines)."""
        inst, gce = self.instance, self.fixture.get("gce") or {}
        user = gce.get("key_user", "cidag")
        attrs: dict[str, Any] = {"ssh-keys": "".join(f"{user}:{k}\n" for k in inst.get("public-keys") or [])}
        if inst.get("user-data") is not None:
            attrs["user-data"] = _text(inst["user-data"])
        attrs.update(gce.get("attributes") or {})
        zone = gce.get("zone", inst.get("availability-zone") or "us-central1-a")
        instance = {"id": gce.get("instance-id", 4520031799277581759), "hostname": inst.get("hostname"),
                    "name": inst.get("hostname"), "zone": f"projects/123456789012/zones/{zone}",
                    "attributes": {k: v for k, v in attrs.items() if v is not None}}
        project = {"projectId": "cidag-sim", "numericProjectId": 123456789012,
                   "attributes": dict(gce.get("project_attributes") or {})}
        return {"instance": instance, "project": project}

    def azure_imds(self) -> dict:
        """The IMDS instance document (compute and a little network)."""
        import base64

        inst, az = self.instance, self.fixture.get("azure") or {}
        compute: dict[str, Any] = {
            "vmId": str(az.get("vm-id", "5c3e1f5a-7d1b-4a8e-9f2c-3b6d8e0a1c24")),
            "name": inst.get("hostname"), "location": "westeurope", "zone": az.get("zone", "1"),
            "osProfile": {"adminUsername": az.get("username", "azureuser"), "computerName": inst.get("hostname"),
                          "disablePasswordAuthentication": "true"},
            "publicKeys": [{"keyData": k, "path": f"/home/{az.get('username', 'azureuser')}/.ssh/authorized_keys"}
                           for k in inst.get("public-keys") or []],
        }
        if inst.get("user-data") is not None:
            compute["userData"] = base64.b64encode(_bytes(inst["user-data"])).decode()
        compute.update(az.get("compute") or {})
        return {"compute": compute, "network": {"interface": [{"macAddress": "000D3A000001"}]}}

    def azure_ovf(self) -> bytes:
        """ovf-env.xml as the provisioning disk holds it (user, password, CustomData, keys)."""
        import base64
        from xml.sax.saxutils import escape

        inst, az = self.instance, self.fixture.get("azure") or {}
        user = az.get("username", "azureuser")
        keys = "".join(f"<PublicKey><Fingerprint>0</Fingerprint><Path>/home/{escape(user)}/.ssh/authorized_keys"
                       f"</Path><Value>{escape(k)}</Value></PublicKey>" for k in inst.get("public-keys") or [])
        password = az.get("password", inst.get("admin-password"))
        custom = base64.b64encode(_bytes(inst["user-data"])).decode() if inst.get("user-data") is not None else ""
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" '
            'xmlns:wa="http://schemas.microsoft.com/windowsazure">\n'
            "<wa:ProvisioningSection><wa:Version>1.0</wa:Version>\n"
            '<LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">\n'
            "<ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>\n"
            f"<HostName>{escape(str(inst.get('hostname') or ''))}</HostName>\n"
            f"<UserName>{escape(user)}</UserName>\n"
            + (f"<UserPassword>{escape(str(password))}</UserPassword>\n" if password else "")
            + f"<DisableSshPasswordAuthentication>{'false' if password else 'true'}</DisableSshPasswordAuthentication>\n"
            + (f"<CustomData>{custom}</CustomData>\n" if custom else "")
            + f"<SSH><PublicKeys>{keys}</PublicKeys></SSH>\n"
            "</LinuxProvisioningConfigurationSet>\n</wa:ProvisioningSection>\n</Environment>\n"
        ).encode()

    def azure_goal_state(self) -> dict:
        az = self.fixture.get("azure") or {}
        return {"incarnation": str(az.get("incarnation", 1)), "container_id": "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2",
                "instance_id": f"{self.azure_imds()['compute']['vmId']}.{self.instance.get('hostname') or 'vm'}"}

    def oracle_instance(self) -> dict:
        import base64

        inst, oc = self.instance, self.fixture.get("oracle") or {}
        meta: dict[str, Any] = {"ssh_authorized_keys": "\n".join(inst.get("public-keys") or [])}
        if inst.get("user-data") is not None:
            meta["user_data"] = base64.b64encode(_bytes(inst["user-data"])).decode()
        doc = {"id": oc.get("instance-id", "ocid1.instance.oc1.phx.anyhqljtsimcidag"),
               "hostname": inst.get("hostname"), "displayName": inst.get("hostname"),
               "availabilityDomain": oc.get("availability-domain", "qIZq:PHX-AD-1"),
               "region": "phx", "metadata": meta}
        doc.update(oc.get("instance") or {})
        return doc

    def hetzner_meta(self) -> dict:
        inst, hz = self.instance, self.fixture.get("hetzner") or {}
        meta = {"instance-id": hz.get("instance-id", 42424242), "hostname": inst.get("hostname"),
                "public-keys": list(inst.get("public-keys") or []), "availability-zone": "fsn1-dc14",
                "region": "eu-central", "local-ipv4": inst.get("local-ipv4"),
                "network-config": {"version": 1, "config": [{"type": "physical", "name": "eth0",
                                                             "subnets": [{"type": "dhcp", "ipv4": True}]}]}}
        meta.update(hz.get("metadata") or {})
        return meta

    def _gce(self, handler, method, parts, query) -> tuple[int, bytes, dict]:
        if handler.headers.get("Metadata-Flavor") != "Google":
            return 403, b"Missing Metadata-Flavor:Google header.\n", {}  # GCE's answer
        if parts[1:2] != ["v1"] or method != "GET":
            return 404, b"Not Found\n", {}
        return _tree(self.gce_tree(), parts[2:], query.get("recursive") == "true", {"Metadata-Flavor": "Google"})

    def _azure(self, handler, method, parts, query) -> tuple[int, bytes, dict]:
        if parts[0] == "machine":
            return self._wireserver(handler, method, query)
        if handler.headers.get("Metadata") != "true":
            return 400, b'{"error": "Bad request. Required metadata header not specified"}\n', {}
        if not query.get("api-version"):
            return 400, b'{"error": "Bad request. api-version was not specified in the request"}\n', {}
        if parts[1:2] != ["instance"] or method != "GET":
            return 404, b"Not Found\n", {}
        status, body, headers = _tree(self.azure_imds(), parts[2:], True, {})
        return status, body, {**headers, "Content-Type": "application/json"}

    def _wireserver(self, handler, method, query) -> tuple[int, bytes, dict]:
        if not handler.headers.get("x-ms-version"):
            return 400, b"missing x-ms-version\n", {}
        gs = self.azure_goal_state()
        if method == "GET" and query.get("comp") == "goalstate":
            body = ('<?xml version="1.0" encoding="utf-8"?>\n<GoalState><Version>2012-11-30</Version>'
                    f"<Incarnation>{gs['incarnation']}</Incarnation><Machine><ExpectedState>Started"
                    "</ExpectedState></Machine><Container>"
                    f"<ContainerId>{gs['container_id']}</ContainerId><RoleInstanceList><RoleInstance>"
                    f"<InstanceId>{gs['instance_id']}</InstanceId></RoleInstance></RoleInstanceList>"
                    "</Container></GoalState>\n")
            return 200, body.encode(), {"Content-Type": "text/xml; charset=utf-8"}
        if method == "POST" and query.get("comp") == "health":
            import xml.etree.ElementTree as ET

            try:
                root = ET.fromstring(handler.read_body(limit=MAX_BODY))
            except ET.ParseError:
                return 400, b"Bad Request: not XML\n", {}
            found = {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in root.iter()}
            report = {"incarnation": found.get("GoalStateIncarnation"), "container_id": found.get("ContainerId"),
                      "instance_id": found.get("InstanceId"), "state": found.get("State")}
            if report != {**gs, "state": "Ready"} and report["state"] != "NotReady":
                return 400, b"Bad Request: the report does not match the goal state\n", {}
            with self._lock:
                self.reported.append(report)
            if self.log:
                self.log(f"health reported: {report['state']}")
            return 200, b"", {}
        return 404, b"Not Found\n", {}

    def _oracle(self, handler, method, parts, query) -> tuple[int, bytes, dict]:
        if parts[1:2] != ["v2"] or method != "GET":
            return 404, b"Not Found\n", {}
        if handler.headers.get("Authorization") != "Bearer Oracle":
            return 401, b"Unauthorized\n", {}
        if parts[2:3] != ["instance"]:
            return 404, b"Not Found\n", {}
        status, body, headers = _tree(self.oracle_instance(), parts[3:], True, {})
        return status, body, {**headers, "Content-Type": "application/json"}

    def _hetzner(self, handler, method, parts, query) -> tuple[int, bytes, dict]:
        import yaml

        if parts[1:2] != ["v1"] or method != "GET":
            return 404, b"Not Found\n", {}
        if parts[2:] == ["userdata"]:
            data = self.instance.get("user-data")
            return 200, b"" if data is None else _bytes(data), {}  # Hetzner: empty when there is none
        if parts[2:3] == ["metadata"]:
            meta = {k: v for k, v in self.hetzner_meta().items() if v is not None}
            if len(parts) == 3:
                return 200, yaml.safe_dump(meta, sort_keys=False).encode(), {"Content-Type": "text/yaml"}
            value = meta.get(parts[3]) if len(parts) == 4 else None
            if value is None:
                return 404, b"Not Found\n", {}
            return 200, (value if isinstance(value, str) else yaml.safe_dump(value)).encode(), {}
        return 404, b"Not Found\n", {}


def _tree(tree: Any, parts: list[str], recursive: bool, headers: dict) -> tuple[int, bytes, dict]:
    """A node of a JSON metadata tree: JSON when `recursive` (or a leaf that is not text), a
    listing of children for a directory asked without it, text for a leaf."""
    node = tree
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return 404, b"Not Found\n", headers
        node = node[part]
    if isinstance(node, dict):
        if recursive:
            return 200, json.dumps(node).encode(), {**headers, "Content-Type": "application/json"}
        return 200, _lines(k + ("/" if isinstance(v, dict) else "") for k, v in node.items()), headers
    return 200, (node.encode() if isinstance(node, str) else json.dumps(node).encode()), headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # a fleet of 1,000 guests connecting at once must not meet a full backlog

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-answer (a probe at its deadline, a guest rebooting) is
        routine for a metadata service: nothing on stderr. Anything else is one line, not
        socketserver's traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"cidag simulator: request from {client_address[0]}:{client_address[1]} failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    server_version = "cidag-simulator"
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send all its requests on one connection
    timeout = 60  # an idle kept-alive connection is closed after a minute, as real servers do

    def setup(self) -> None:
        super().setup()
        sim: Simulator = self.server.sim  # type: ignore[attr-defined]
        with sim._lock:
            sim.connections += 1
            sim.open_connections += 1
            sim.peak_connections = max(sim.peak_connections, sim.open_connections)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            sim: Simulator = self.server.sim  # type: ignore[attr-defined]
            with sim._lock:
                sim.open_connections -= 1

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def read_body(self, limit: int) -> bytes:
        return self._body[:limit]

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the simulator logs itself
        pass

    def _serve(self, method: str) -> None:
        sim: Simulator = self.server.sim  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        self._started, self._method, self._recorded = time.monotonic(), method, False
        length = self.headers.get("Content-Length") or "0"
        length = int(length) if length.isdigit() else 0
        self._body = self.rfile.read(min(length, MAX_BODY))
        if length > MAX_BODY:
            self.close_connection = True  # the rest of the body is still on the wire
        gate = sim.gate
        if gate.throttled(self.client_address[0]):
            status = self._refuse(429)
        elif not gate.enter(sim.stopping):
            status = self._refuse(sim.capacity.status)
        else:
            try:
                took = gate.service_time()
                if took and sim.stopping.wait(took):
                    status = 0
                else:
                    status = self._answer(sim, method, path)
            finally:
                gate.leave()
        if not status:
            self.close_connection = True  # nothing (or half) was answered: this connection is done
        self._record(status)

    def _refuse(self, status: int) -> int:
        sim: Simulator = self.server.sim  # type: ignore[attr-defined]
        headers = {"Retry-After": str(sim.capacity.retry_after)} if sim.capacity.retry_after is not None else {}
        reason = "Too Many Requests" if status == 429 else "Service Unavailable"
        return self._send(status, f"{status} {reason}: the service is busy\n".encode(), headers)

    def _record(self, status: int) -> None:
        """Log the request once, before its answer is written, so a client never outruns the log."""
        if self._recorded:
            return
        self._recorded = True
        sim: Simulator = self.server.sim  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        with sim._lock:
            sim.requests.append((self._started, self._method, path, status))
            sim.clients.append(self.client_address[0])
        if sim.log:
            took = time.monotonic() - self._started
            sim.log(f"{self._method} {path} -> {status if status else 'no answer'} ({took:.2f}s)")

    def _answer(self, sim: Simulator, method: str, path: str) -> int:
        faults = sim._active_faults(method, path)
        wait = sum(f.delay + (random.uniform(0, f.jitter) if f.jitter else 0.0) for f in faults)
        if wait and sim.stopping.wait(wait):
            return 0
        for fault in faults:
            if fault.stall:
                sim.stopping.wait()
                return 0
            if fault.reset:
                self._record(0)
                self.close_connection = True
                # SO_LINGER 0: close() sends RST, not FIN (what a crashed or overloaded
                # service's kernel, or a middlebox, does); the read buffer goes first, since
                # the socket closes only once nothing refers to it.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()
                self.connection.close()
                return 0
            if fault.redirect:
                return self._send(302, b"", {"Location": fault.redirect})
            if fault.body in ("endless", "huge"):
                return self._stream(sim, fault)
            if fault.close_mid_body:
                status, body, headers = sim._route(self, method, path)
                body = body or b"x" * 64
                self._record(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return 0
            if fault.status is not None or fault.body is not None:
                status = fault.status if fault.status is not None else 200
                body = (fault.body if fault.body is not None else f"HTTP {status} (injected)\n").encode()
                if method == "POST":
                    self.read_body(limit=1024)
                return self._send(status, body, {"Content-Type": fault.content_type})
        status, body, headers = sim._route(self, method, path)
        return self._send(status, body, headers)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> int:
        self._record(status)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        return status

    def _stream(self, sim: Simulator, fault: Fault) -> int:
        chunk = b"x" * 65536
        endless = fault.body == "endless"
        total = ENDLESS_LIMIT if endless else fault.size
        self._record(200)
        try:
            self.send_response(200)
            if not endless:
                self.send_header("Content-Length", str(total))
            else:
                self.send_header("Connection", "close")  # no length: the end of the body is the close
                self.close_connection = True
            self.end_headers()
            sent = 0
            while sent < total and not sim.stopping.is_set():
                piece = chunk[: total - sent]
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        return 200


def load_fixture(path: str | Path | None) -> dict:
    """The fixture at `path` (YAML or JSON), or the shipped default; raise ValueError if malformed."""
    import yaml

    source = Path(path) if path else DEFAULT_FIXTURE
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a fixture is a mapping")
    unknown = set(data) - FIXTURE_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown fixture key(s): {', '.join(sorted(unknown))}")
    for spec in data.get("faults") or []:
        Fault.from_dict(spec)  # validate early: one line naming the bad fault
    if data.get("capacity") is not None:
        if not isinstance(data["capacity"], dict):
            raise ValueError(f"{source}: capacity is a mapping")
        try:
            Capacity.from_dict(data["capacity"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None
    return data


def _keywords(spec: Mapping[str, Any], known: set[str], durations: tuple[str, ...], what: str) -> dict:
    """`spec` as keyword arguments, durations in seconds; ValueError naming `what` on an unknown key."""
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {', '.join(sorted(unknown))}")
    kw = dict(spec)
    for key in durations:
        if key in kw:
            kw[key] = parse_duration(kw[key])
    return kw


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1).encode()


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _lines(items) -> bytes:
    return "".join(f"{i}\n" for i in items).encode()
