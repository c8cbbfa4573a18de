"""Re-mint (rotate), revoke and uninstall against the genuine pveum, on all four generations."""
from __future__ import annotations

import pytest

from pvemond.service import ServiceError


def test_rotate_keeps_a_privsep_tokens_acl(converged, gen):
    """8.x and 9.0 re-create the token (remove + add), which drops its ACL: it must come back."""
    first = converged.bootstrap(token="grafana", privsep=True)
    second = converged.mint(token="grafana", privsep=True, rotate=True)
    converged.deliver(second)
    assert second.how == ("regenerated" if gen.regenerate else "re-created")
    cfg = converged.user_cfg()
    assert "token:monitoring@pve!grafana:0:1:managed by pvemond:" in cfg
    assert "acl:1:/:monitoring@pve,monitoring@pve!grafana:monitoring:" in cfg
    assert converged.secrets()["monitoring@pve!grafana"] == second.secret.reveal()
    assert converged.status_of(first.token_id, first.secret.reveal()) == 401
    assert converged.status_of(second.token_id, second.secret.reveal()) == 200


def test_revoke(converged):
    token = converged.minted
    assert converged.svc.revoke("monitoring", caller="test")["revoked"] is True
    assert "token:" not in converged.user_cfg()
    assert token.token_id not in converged.secrets()
    assert converged.status_of(token.token_id, token.secret.reveal()) == 401
    with pytest.raises(ServiceError) as err:
        converged.svc.revoke("monitoring", caller="test")
    assert err.value.code == "no_such_token"


def test_uninstall_leaves_nothing_of_pvemond(converged):
    token = converged.minted
    converged.svc.uninstall(caller="test")
    cfg = converged.user_cfg()
    assert "monitoring" not in cfg and "user:root@pam:1:0:::root@example.com:::" in cfg
    assert converged.secrets() == {}  # upstream's user delete keeps token.cfg lines: none may stay
    assert converged.status_of(token.token_id, token.secret.reveal()) == 401
