# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)
"""ufw_missing: the allow rules that ufw's rule files do not hold yet."""

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: ufw_missing
short_description: The allow rules of a list that ufw does not hold yet
version_added: 0.1.0
description:
  - >-
    Takes the TCP allow rules a host should have, each written as C(PORT SOURCE COMMENT), and the contents of
    ufw's rule files, and returns the rules that are missing, in the order given: a rule counts as held when a
    C(### tuple ###) line of the files has its port, its source and its comment. A source of C(any) needs the
    IPv4 file's line and, when ufw manages IPv6, the IPv6 file's line too (ufw writes both); an IPv4 source the
    IPv4 file's, an IPv6 source the IPv6 file's. Sources compare as ufw stores them (C(0.0.0.0/0) and C(::/0)
    read as C(any), a C(/32) or C(/128) address as the address).
  - The firewall role calls C(community.general.ufw) for the missing rules only, so that a converged host
    costs no ufw run at all.
options:
  _input:
    description: The wanted rules, C(PORT SOURCE COMMENT) (the comment may contain spaces).
    type: list
    elements: str
    required: true
  user_rules:
    description: The contents of C(/etc/ufw/user.rules) (empty when it does not exist).
    type: str
    required: true
  user6_rules:
    description: The contents of C(/etc/ufw/user6.rules) (empty when it does not exist).
    type: str
    required: true
  ipv6:
    description: Whether ufw manages IPv6 (C(IPV6=yes) in C(/etc/default/ufw)).
    type: bool
    default: true
"""

EXAMPLES = r"""
missing: "{{ ['22 any mlflowops ssh'] | mlflowops.tracking.ufw_missing(v4_text, v6_text, true) }}"
"""

RETURN = r"""
_value:
  description: The wanted rules that are not held, as given.
  type: list
  elements: str
"""

_TUPLE = re.compile(r"^### tuple ### allow tcp ([0-9]+) \S+ any (\S+) in comment=([0-9a-f]+)$", re.M)


def _source(text):
    if text in ("0.0.0.0/0", "::/0"):
        return "any"
    return re.sub(r"^([0-9.]+)/32$|^([0-9a-fA-F:]+)/128$", lambda m: m.group(1) or m.group(2), text)


def _held(text):
    return {(port, _source(source), comment) for port, source, comment in _TUPLE.findall(text or "")}


def ufw_missing(rules, user_rules, user6_rules, ipv6=True):
    if not isinstance(rules, (list, tuple)):
        raise AnsibleFilterError(f"ufw_missing takes a list of 'PORT SOURCE COMMENT' rules, got {type(rules).__name__}")
    held4, held6 = _held(user_rules), _held(user6_rules)
    missing = []
    for rule in rules:
        parts = str(rule).split(" ", 2)
        if len(parts) != 3:
            raise AnsibleFilterError(f"ufw_missing: '{rule}' is not 'PORT SOURCE COMMENT'")
        port, source, comment = parts
        key = (port, _source(source), comment.encode().hex())
        if key[1] == "any":
            held = key in held4 and (not ipv6 or key in held6)
        elif ":" in key[1]:
            held = key in held6
        else:
            held = key in held4
        if not held:
            missing.append(rule)
    return missing


class FilterModule:
    def filters(self):
        return {"ufw_missing": ufw_missing}
