"""One site of the upstream ring: a node whose pveum is upstream's, the pveproxy stand-in
reading the files upstream wrote, and pvemond's NodeService configured for both (in-process,
as tests/integration/test_converge.py drives it)."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Dict

from harness import free_port, token_works, write_config
from pvemond import config
from pvemond.pve import usercfg
from pvemond.service import Minted, NodeService
from pvesim.node import SimNode
from upnode import Generation, clear_calls, copy_upstream_node, make_upstream_node


class Site:
    def __init__(self, node: SimNode, workdir: Path, gen: Generation):
        self.node, self.workdir, self.gen = node, workdir, gen
        self.proxy = node.start_proxy()
        cfg = write_config(workdir / "pvemond.yaml", node, self.proxy.url, workdir,
                           claim={"port": free_port(), "listen": "127.0.0.1"})
        self.svc = NodeService(config.load(str(cfg)))

    @classmethod
    def fresh(cls, workdir: Path, gen: Generation, upstream: Path) -> "Site":
        return cls(make_upstream_node(workdir / "node", gen, upstream), workdir, gen)

    @classmethod
    def copy(cls, template: "Site", workdir: Path, upstream: Path) -> "Site":
        """The template's node and pvemond state, at workdir (cheaper than converging again)."""
        node = copy_upstream_node(template.node, workdir / "node", template.gen, upstream)
        shutil.copytree(str(template.workdir / "state"), str(workdir / "state"))
        clear_calls(node)
        return cls(node, workdir, template.gen)

    # -- pvemond -----------------------------------------------------------------------------
    def mint(self, rotate: bool = False, **kwargs) -> Minted:
        """service.mint; `rotate=True` only where mint knows it (re-minting an existing token
        needs it once the hand-out lifecycle change lands)."""
        if rotate and "rotate" in inspect.signature(self.svc.mint).parameters:
            kwargs["rotate"] = True
        return self.svc.mint(caller="test", **kwargs)

    def deliver(self, minted: Minted) -> None:
        self.svc.finish_handout(minted.handout, caller="test", delivered=True, to="test")

    def bootstrap(self, **kwargs) -> Minted:
        minted = self.mint(**kwargs)
        self.deliver(minted)
        return minted

    def doctor(self, fix: bool = False) -> Dict:
        return self.svc.doctor(caller="test", fix=fix)

    # -- the node, as upstream left it --------------------------------------------------------
    def pveum(self, *args: str) -> None:
        self.node.run_pveum(*args)

    def user_cfg(self) -> str:
        return self.node.user_cfg()

    def access(self) -> usercfg.AccessState:
        return usercfg.parse(self.user_cfg())

    def secrets(self) -> Dict[str, str]:
        """priv/token.cfg as {token id: secret}."""
        return dict(line.split(" ", 1) for line in self.node.token_cfg().splitlines() if line)

    def status_of(self, token_id: str, secret: str) -> int:
        """What pveproxy (the stand-in, on upstream's files) answers this token over HTTPS."""
        return token_works(self.proxy, self.node, token_id, secret)

    def close(self) -> None:
        self.proxy.stop()
