"""pvemond: a read-only monitoring API token for Proxmox VE, set up and handed over safely."""

__version__ = "0.1.0"
