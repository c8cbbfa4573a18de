"""pvemond_monitor's check of the tokens this monitoring host already holds (a node said `kept`):
is each one's module still in pve.yml, with that token, a secret and its CA file, and its file_sd
target file still there? Prints the ones that are not, as JSON; never a setting's value.

    python3 kept_check.py PVE_YML FILE_SD_DIR KEPT_JSON

KEPT_JSON: [{"cluster", "token_id", "cluster_name", "node_name"}, ...] from the node role. The
module name is pvemond-claim's own (pvemond.formats.module_name, from pvemond-client)."""
from __future__ import annotations

import json
import os
import re
import sys

from pvemond.formats import FormatError, module_name


def settings(text: str, module: str):
    """The `key: value` lines of `module` in pve.yml (a top-level key), or None without it."""
    key = re.compile(r"""^["']?%s["']?\s*:\s*(#.*)?$""" % re.escape(module))
    found, out = False, {}
    for line in text.splitlines():
        if not found:
            found = bool(key.match(line))
            continue
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            break  # the next module
        m = re.match(r"""^\s+(\w+)\s*:\s*(.*?)\s*(?:\s#.*)?$""", line)
        if m:
            out[m.group(1)] = m.group(2).strip("'\"")
    return out if found else None


def problem(pve_yml: str, file_sd: str, kept: dict) -> str:
    try:
        module = module_name({"cluster": kept.get("cluster_name"), "node": kept.get("node_name")})
    except FormatError:
        return "pvemond on the node names neither its cluster nor itself, so its module is unknown"
    try:
        with open(pve_yml, encoding="utf-8") as fh:
            have = settings(fh.read(), module)
    except FileNotFoundError:
        have = None
    user, _, token = kept["token_id"].partition("!")
    if have is None:
        return f"{pve_yml} has no module {module}"
    if (have.get("user"), have.get("token_name")) != (user, token):
        return f"module {module} in {pve_yml} holds another token, not {kept['token_id']}"
    if not have.get("token_value"):
        return f"module {module} in {pve_yml} has no token_value"
    ca = have.get("verify_ssl", "")
    if ca.startswith("/") and not os.path.exists(ca):
        return f"module {module}'s CA file {ca} (verify_ssl) is gone"
    if not os.path.exists(os.path.join(file_sd, f"{module}.yml")):
        return f"its file_sd target file {os.path.join(file_sd, module + '.yml')} is gone"
    return ""


def main(argv: list) -> int:
    pve_yml, file_sd, kept = argv[0], argv[1], json.loads(argv[2])
    lost = [{"cluster": k["cluster"], "detail": f"{k['cluster']}: {p}"}
            for k in kept if (p := problem(pve_yml, file_sd, k))]
    print(json.dumps(lost))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
