"""pveum's usage listing, as CLIHandler's print_usage_short lays it out (checked against the
genuine pveum by tests/upstream/test_differential.py).

Upstream orders each level with sub-command groups first (by name), then commands by their
API class and name, and puts a blank line where the class changes and after each top-level
group. The listing also names the commands the simulator does not run (groups, realms, TFA,
passwd, ticket), so its text is upstream's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

HEAD = "USAGE: pveum <COMMAND> [ARGS] [OPTIONS]\n\n"
USER_API = "PVE::API2::User"
# The API class of each command the simulator runs, where it is not PVE::API2::User.
API_CLASS = {
    "acl": "PVE::API2::ACL", "role": "PVE::API2::Role", "help": "PVE::CLIHandler",
    "user permissions": "PVE::API2::AccessControl", "user token permissions": "PVE::CLI::pveum",
}
# Listed by upstream, not run by the simulator: (words, API class, usage after the words).
LISTED_ONLY = (
    ("group add", "PVE::API2::Group", "<groupid> [OPTIONS]"),
    ("group delete", "PVE::API2::Group", "<groupid>"),
    ("group list", "PVE::API2::Group", " [FORMAT_OPTIONS]"),
    ("group modify", "PVE::API2::Group", "<groupid> [OPTIONS]"),
    ("realm add", "PVE::API2::Domains", "<realm> --type <string> [OPTIONS]"),
    ("realm delete", "PVE::API2::Domains", "<realm>"),
    ("realm list", "PVE::API2::Domains", " [FORMAT_OPTIONS]"),
    ("realm modify", "PVE::API2::Domains", "<realm> [OPTIONS]"),
    ("realm sync", "PVE::API2::Domains", "<realm> [OPTIONS]"),
    ("user tfa unlock", "PVE::API2::AccessControl", "<userid>"),
    ("user tfa delete", "PVE::API2::TFA", "<userid> [OPTIONS]"),
    ("user tfa list", "PVE::API2::TFA", "[<userid>]"),
    ("passwd", "PVE::API2::AccessControl", "<userid> [OPTIONS]"),
    ("ticket", "PVE::API2::AccessControl", "<username> [OPTIONS]"),
)


@dataclass(frozen=True)
class Entry:
    api: str
    line: str  # the usage line, "pveum ..."


Listing = Dict[str, Union["Listing", Entry]]


def api_class(words: Sequence[str]) -> str:
    joined = " ".join(words)
    return API_CLASS.get(joined) or API_CLASS.get(words[0]) or USER_API


def _insert(listing: Listing, words: Sequence[str], entry: Entry) -> None:
    for word in words[:-1]:
        listing = listing.setdefault(word, {})  # type: ignore[assignment]
    listing[words[-1]] = entry


def build(commands: Sequence[Tuple[Sequence[str], str]]) -> Listing:
    """The listing of `commands` ((words, usage line) each) plus LISTED_ONLY."""
    listing: Listing = {}
    for words, line in commands:
        _insert(listing, words, Entry(api_class(words), line))
    for words, api, tail in LISTED_ONLY:
        _insert(listing, words.split(), Entry(api, f"pveum {words} {tail}"))
    return listing


def _order(listing: Listing):
    groups = sorted(k for k, v in listing.items() if not isinstance(v, Entry))
    entries = sorted((k for k, v in listing.items() if isinstance(v, Entry)),
                     key=lambda k: (listing[k].api, k))  # type: ignore[union-attr]
    return groups + entries


def render(listing: Listing, separator: str) -> str:
    text, previous = "", None
    for key in _order(listing):
        value = listing[key]
        if isinstance(value, Entry):
            if previous and previous != value.api:
                text += separator
            text += f"       {value.line}\n"
            previous = value.api
        else:
            block = render(value, "")
            if block and separator and separator * 2 not in block:
                block += separator
            text += block
    return text


def usage_text(listing: Listing, words: Sequence[str] = ()) -> str:
    """The whole listing, or (for an incomplete command) the part under `words`."""
    for word in words:
        listing = listing[word]  # type: ignore[assignment]
    return HEAD + render(listing, "" if words else "\n")
