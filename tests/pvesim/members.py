"""/etc/pve/.members in pmxcfs's exact text format (node.md §1.1)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional


def members_text(nodename: str, cluster: Optional[Dict[str, Any]], quorate: bool) -> str:
    """Standalone: two keys. Cluster: the printf layout of cfs_create_memberlist_msg()."""
    if not cluster:
        return f'{{\n"nodename": "{nodename}",\n"version": 0\n}}\n'
    nodes = cluster["nodes"]
    entries = []
    for node in nodes:
        ip = f', "ip": "{node["ip"]}"' if node.get("ip") else ""
        entries.append(f'  "{node["name"]}": {{ "id": {node["id"]}, "online": {node["online"]}{ip}}}')
    return (
        "{\n"
        f'"nodename": "{nodename}",\n'
        f'"version": {cluster.get("clinfo_version", 5)},\n'
        f'"cluster": {{ "name": "{cluster["name"]}", "version": {cluster.get("config_version", 3)}, '
        f'"nodes": {len(nodes)}, "quorate": {1 if quorate else 0} }},\n'
        '"nodelist": {\n' + ",\n".join(entries) + "\n  }\n}\n"
    )


def parse_members(text: str) -> Dict[str, Any]:
    """The text is valid JSON; this is what PVE::Cluster::get_clinfo() sees."""
    return json.loads(text)


def node_list(members: Dict[str, Any]) -> List[Dict[str, Any]]:
    """[{name, online, ip?}]: the nodelist, or just the local node when standalone."""
    nodelist = members.get("nodelist")
    if not nodelist or members.get("nodename") not in nodelist:
        return [{"name": members.get("nodename"), "online": 1, "local": 1}]
    return [
        {"name": name, "local": 1 if name == members.get("nodename") else 0, **info}
        for name, info in nodelist.items()
    ]
