"""Everything that touches the Proxmox VE node itself: pveum, node files, pveproxy."""
