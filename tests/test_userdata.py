"""cidag.userdata and the user-data module: formats, merging, broken input, validation."""
from __future__ import annotations

import base64
import gzip
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from cidag import userdata
from cidag.testing import make_context


def mime(*parts) -> bytes:
    msg = MIMEMultipart()
    for ctype, body, fname in parts:
        if ctype == "gzip":
            p = MIMEApplication(gzip.compress(body.encode()), "gzip")
        else:
            p = MIMEText(body, ctype)
        p.add_header("Content-Disposition", "attachment", filename=fname)
        msg.attach(p)
    return msg.as_bytes()


def test_cloud_config():
    ud = userdata.parse("#cloud-config\nhostname: web1\nruncmd: [ls]\n")
    assert ud.cloud_config == {"hostname": "web1", "runcmd": ["ls"]}
    assert ud.errors == [] and ud.scripts == []


def test_script_and_gzip_and_base64():
    script = b"#!/bin/sh\necho hi\n"
    ud = userdata.parse(gzip.compress(script))
    assert [s.content for s in ud.scripts] == [script]
    ud = userdata.parse(base64.b64encode(gzip.compress(b"#cloud-config\na: 1\n")).decode(), encoding="base64")
    assert ud.cloud_config == {"a": 1}
    ud = userdata.parse({"data": base64.b64encode(b"#cloud-config\nb: 2\n").decode(), "encoding": "b64"})
    assert ud.cloud_config == {"b": 2}


def test_mime_multipart_mixed_parts_merge_in_order():
    data = mime(
        ("cloud-config", "#cloud-config\nhostname: a\nusers: [x]\nntp: {enabled: true}\n", "one.yaml"),
        ("x-shellscript", "#!/bin/sh\necho one\n", "one.sh"),
        ("cloud-config", "#cloud-config\nhostname: b\nntp: {servers: [s]}\n", "two.yaml"),
        ("gzip", "#!/bin/bash\necho two\n", "two.sh.gz"),
        ("plain", "#cloud-config\nextra: 1\n", "plain.txt"),
    )
    ud = userdata.parse(data)
    assert ud.errors == []
    assert ud.cloud_config == {"hostname": "b", "users": ["x"], "ntp": {"enabled": True, "servers": ["s"]},
                               "extra": 1}
    assert [s.content.split(b"\n")[1] for s in ud.scripts] == [b"echo one", b"echo two"]
    assert ud.scripts[0].name.endswith("one.sh")


def test_mime_base64_transfer_encoding():
    msg = MIMEMultipart()
    part = MIMEText("#cloud-config\nk: v\n", "cloud-config", "utf-8")  # utf-8 => base64 transfer encoding
    msg.attach(part)
    assert "base64" in msg.as_string()
    assert userdata.parse(msg.as_bytes()).cloud_config == {"k": "v"}


def test_broken_parts_reported_others_kept():
    data = mime(
        ("cloud-config", "#cloud-config\nhostname: [unclosed\n", "bad.yaml"),
        ("x-shellscript", "#!/bin/sh\necho ok\n", "ok.sh"),
        ("cloud-config", "#cloud-config\n- a list\n", "list.yaml"),
    )
    ud = userdata.parse(data)
    assert len(ud.scripts) == 1
    assert len(ud.errors) == 2
    assert "invalid YAML" in ud.errors[0] and "line" in ud.errors[0]
    assert "must be a mapping" in ud.errors[1]


def test_gzip_bomb_and_bad_base64_do_not_raise():
    bomb = gzip.compress(b"\0" * (userdata.MAX_SIZE + 10))
    ud = userdata.parse(bomb)
    assert ud.errors and "larger than" in ud.errors[0]
    ud = userdata.parse(b"\x1f\x8bnot gzip")
    assert ud.errors and "gzip" in ud.errors[0]


def test_unknown_and_unsupported_parts_warn():
    ud = userdata.parse("#include http://example.com/x\n")
    assert ud.warnings and not ud.errors
    ud = userdata.parse("just some text")
    assert ud.warnings and "unrecognised" in ud.warnings[0]


def test_vendor_merge_user_wins_and_can_disable():
    user = userdata.parse("#cloud-config\nhostname: u\nwrite_files: []\n")
    vendor = userdata.parse("#cloud-config\nhostname: v\nruncmd: [vendor]\n")
    merged = userdata.combine(user, vendor)
    assert merged.cloud_config == {"hostname": "u", "write_files": [], "runcmd": ["vendor"]}
    off = userdata.parse("#cloud-config\nvendor_data: {enabled: false}\n")
    assert "runcmd" not in userdata.combine(off, vendor).cloud_config


def test_module_provides_capabilities():
    ctx, run = make_context("module", "user-data", caps={
        "user-data": mime(("cloud-config", "#cloud-config\nhostname: h\n", "a"),
                          ("x-shellscript", "#!/bin/sh\ntrue\n", "s.sh")),
        "vendor-data": "#cloud-config\nhostname: v\nfqdn: v.example\n"})
    out = run(ctx)
    assert out["cloud-config"] == {"hostname": "h", "fqdn": "v.example"}
    assert out["user-scripts"][0]["content"] == b"#!/bin/sh\ntrue\n"
    assert out["user-scripts"][0]["origin"] == "user-data"


def test_module_fails_only_when_nothing_usable(caplog):
    ctx, run = make_context("module", "user-data", caps={"user-data": "#cloud-config\n: : :\n  - [\n"})
    with pytest.raises(RuntimeError, match="user-data unusable: .*invalid YAML"):
        run(ctx)
    ctx, run = make_context("module", "user-data", caps={
        "user-data": mime(("cloud-config", "#cloud-config\n[\n", "bad"), ("cloud-config", "#cloud-config\nx: 1\n", "ok"))})
    assert run(ctx)["cloud-config"] == {"x": 1}
    assert any("invalid YAML" in r.message for r in caplog.records)


def test_module_without_user_data():
    ctx, run = make_context("module", "user-data")
    assert run(ctx) == {"cloud-config": {}, "user-scripts": []}


def test_validate_user_data_file(tmp_path):
    good = tmp_path / "good"
    good.write_text("#cloud-config\nhostname: web\nusers:\n  - default\n  - name: bob\n    groups: [a]\n"
                    "write_files:\n  - path: /etc/x\n    content: hi\n")
    assert userdata.validate_user_data_file(good) == []
    bad = tmp_path / "bad"
    bad.write_text("#cloud-config\nhostname: web\napt: {preserve_sources_list: true}\nusers:\n  - name: bob\n    shel: /bin/sh\n"
                   "write_files:\n  - content: no path\n")
    diags = userdata.validate_user_data_file(bad)
    errors = [d for d in diags if d.severity == "error"]
    warnings = [d for d in diags if d.severity == "warning"]
    assert any(d.message.startswith("cloud-config key 'apt' is not supported") and d.line == 3 for d in warnings)
    assert any("shel" in d.message and d.line == 6 and "users" in d.message for d in errors)
    assert any("path" in d.message and d.line == 8 for d in errors)
    broken = tmp_path / "broken"
    broken.write_text("#cloud-config\nhostname: [\n")
    diags = userdata.validate_user_data_file(broken)
    assert diags and diags[0].severity == "error" and diags[0].line >= 2
    assert userdata.validate_user_data_file(tmp_path / "missing")[0].message.startswith("cannot read")


def test_validate_mime_file(tmp_path):
    f = tmp_path / "mime"
    f.write_bytes(mime(("cloud-config", "#cloud-config\nruncmd: notalist\n", "a"), ("x-shellscript", "#!/bin/sh\n", "b")))
    diags = userdata.validate_user_data_file(f)
    assert any("runcmd" in d.message and d.severity == "error" for d in diags)
