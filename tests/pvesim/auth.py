"""API token authentication as pveproxy does it (pveum.md §6.1, §6.2)."""
from __future__ import annotations

import re
import time
from typing import Dict, Optional
from urllib.parse import unquote

from . import names, perms
from .usercfg import UserConfig

# Formatter.pm extract_auth_value: case-sensitive key, '=' or ' ', value ends at ';'.
_HEADER_RE = re.compile(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)")
UNIFIED_REASON = "Authentication failed!"  # pve-manager >= 9.1.5 / 8.4.17
NO_TICKET = "No ticket"


class AuthFailure(Exception):
    """Authentication failed; str() is the raw verify_token text (without newline)."""


def extract_api_token(header: Optional[str]) -> Optional[str]:
    """The URI-unescaped token value of an Authorization header, or None."""
    if not header:
        return None
    m = _HEADER_RE.search(header)
    return unquote(m.group(1)) if m else None


def verify_token(api_token: str, cfg: UserConfig, secrets: Dict[str, str], now: Optional[float] = None) -> str:
    """AccessControl::verify_token; returns the full token id or raises AuthFailure."""
    m = re.fullmatch(r"(.*)=(.*)", api_token, re.S)  # greedy: split at the LAST '='
    if not m:
        raise AuthFailure("no tokenid specified")
    tokenid, value = m.group(1), m.group(2)
    try:
        userid, token = names.split_tokenid(tokenid)
        perms.check_user_enabled(cfg, userid, now)
        info = perms.check_token_exist(cfg, userid, token)
    except (names.Invalid, perms.AccessError) as err:
        raise AuthFailure(str(err).rstrip("\n")) from None
    expire = int(info.get("expire") or 0)
    if expire and expire < (time.time() if now is None else now):
        raise AuthFailure(f"token '{token}' access expired")
    if secrets.get(tokenid) != value:  # pmxcfs compares "<tokenid> <secret>" byte for byte
        raise AuthFailure("invalid token value!")
    return tokenid


def authenticate(header: Optional[str], cfg: UserConfig, secrets: Dict[str, str]) -> str:
    """Token id of the caller; AuthFailure('No ticket') when no usable token was sent."""
    api_token = extract_api_token(header)
    if not names.perl_true(api_token):  # '' and '0' are false in Perl: no token at all
        raise AuthFailure(NO_TICKET)
    return verify_token(api_token, cfg, secrets)
