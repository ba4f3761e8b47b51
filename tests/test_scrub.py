"""What is scrubbed from logs and records: the secrets inside user-data, not every word of it.

The parsed cloud-config is a secret capability (it may hold passwords), but only
its password-like leaves are secret: scrubbing every leaf made a real boot's log
read `network<secret>onfig` and `$ <secret> <secret> '<secret>'` (the runcmd
words `-c`, `sh`).
"""
from __future__ import annotations

import json

from cidag.engine import RunOptions, run
from cidag.values import SecretPolicy
from graphs import compile_text

PASSWORD = "Pw-s3cret-1"
HASH = "$6$salt$0123456789abcdefghij"
USER_DATA = "#cloud-config\n" + json.dumps({
    "hostname": "web-1",
    "runcmd": [["sh", "-c", "echo hi"]],
    "users": [{"name": "bob", "hashed_passwd": HASH}],
    "chpasswd": {"users": [{"name": "alice", "password": PASSWORD, "type": "text"}],
                 "list": "carol:Carol-pw-77\n"},
    "ssh_keys": {"rsa_private": "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY-----\n"},
})


def test_only_password_like_leaves_of_a_secret_document_are_scrubbed():
    policy = SecretPolicy(["cloud-config"])
    policy.learn({"cloud-config": json.loads(USER_DATA.split("\n", 1)[1])})
    text = "network-config for web-1: sh -c 'echo hi'; bob alice text"
    assert policy.scrub(text) == text
    for secret in (PASSWORD, HASH, "Carol-pw-77", "MIIabc"):
        assert policy.scrub(f"x {secret} y") == "x <secret> y"
    # A secret given as one string is scrubbed whole.
    policy.learn({"admin-password": "hunter2-long"})
    assert policy.scrub("pw hunter2-long") == "pw <secret>"


def test_a_run_logs_its_commands_and_keeps_passwords_out(tmp_path):
    cg = compile_text(
        {"version": 1, "sources": [{"name": "seed", "type": "static", "capabilities": ["instance-id", "user-data"],
                                    "settings": {"data": {"instance-id": "i-1", "user-data": USER_DATA}}}]},
        {"version": 1, "modules": [
            {"name": "user-data", "type": "user-data", "frequency": "per-boot", "wants": ["user-data"],
             "provides": ["cloud-config", "user-scripts"]},
            {"name": "say", "type": "exec", "frequency": "per-boot", "wants": ["cloud-config"],
             "settings": {"command": f"echo 'network-config sh -c web-1 {PASSWORD}'"}}]})
    rec = run(cg, RunOptions(root=tmp_path / "root", handle_signals=False)).record
    out = next(n for n in rec["nodes"] if n["id"] == "module:say")["output"]
    assert out == "network-config sh -c web-1 <secret>\n"
