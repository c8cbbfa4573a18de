"""The secret appears in the deliberate output and in PVE's own token.cfg: nowhere else."""
from __future__ import annotations

import json
from pathlib import Path


def files_holding(root: Path, needle: bytes, skip: set) -> list:
    return [p for p in root.rglob("*")
            if p.is_file() and p not in skip and needle in p.read_bytes()]


def test_secret_reaches_only_the_chosen_output(tmp_path, daemon, node, bootstrap):
    out = tmp_path / "out" / "pve.env"
    out.parent.mkdir()
    runs = [bootstrap("--format", "json"), bootstrap("--json", "--rotate", "--format", "env"),
            bootstrap("--rotate", "--format", "env", "-o", str(out)), bootstrap("--token", "1bad")]
    secrets = [json.loads(runs[0].stdout)["secret"].encode(),
               json.loads(runs[1].stdout.splitlines()[-1])["output"].split("PVE_TOKEN_VALUE='")[1]
               .split("'")[0].encode()]
    daemon.stop()  # flush every log line
    token_cfg = node.pve_dir / "priv" / "token.cfg"
    for secret in secrets:
        assert len(secret) == 36
        for r in runs:
            assert secret not in r.stderr.encode()
        assert files_holding(tmp_path, secret, {token_cfg}) == []
    third = files_holding(tmp_path, b"PVE_TOKEN_VALUE=", {token_cfg})
    assert third == [out]
    # The daemon log is at DEBUG and did see the work.
    log = daemon.log.read_text()
    assert "mint" in log and "monitoring@pve!monitoring" in log
