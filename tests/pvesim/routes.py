"""The GET routes of the pveproxy stand-in (under /api2/json) and their dispatch."""
from __future__ import annotations

import re
from typing import Any, Callable, List, Tuple

from . import api_cluster as cluster
from .api_nodes import NODE_ROUTES
from .request import ApiError, Request

Route = Callable[..., Any]
ROUTES: List[Tuple[str, "re.Pattern[str]", Route]] = [
    ("GET", re.compile(pattern), handler) for pattern, handler in [
        ("/version", cluster.get_version),
        ("/access/permissions", cluster.get_permissions),
        ("/access/users", cluster.get_users),
        ("/cluster/status", cluster.get_cluster_status),
        ("/cluster/resources", cluster.get_cluster_resources),
        ("/cluster/backup-info/not-backed-up", cluster.get_not_backed_up),
        ("/cluster/config/qdevice", cluster.get_qdevice),
        *NODE_ROUTES,
    ]
]


def dispatch(method: str, rel: str, req: Request) -> Any:
    for route_method, pattern, handler in ROUTES:
        m = pattern.fullmatch(rel)
        if m and route_method == method:
            return handler(req, *m.groups())
    raise ApiError(501, f"Method '{method} {rel}' not implemented")
