"""pvesim: a Proxmox VE node in a directory, for tests and `make demo`.

A simulated node is a directory tree (ROOT) holding the files a real node has under
/etc/pve (user.cfg, priv/token.cfg, .members, certificates), a fake `pveum`
(ROOT/usr/sbin/pveum) that behaves like the real one, and a pveproxy stand-in that
answers token-authenticated HTTPS requests from the same files.

Entry points: `pvesim.node.SimNode` (Python), `python3 -m pvesim init|proxy` (CLI).
The behaviour follows the project's reference sheets on pveum and the node (shared/reference).
"""
