# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)
"""ufw_missing: the allow rules that ufw's rule files do not hold yet; ufw_stale: the rules the role made that are no
longer wanted. Their documentation: ufw_missing.yml and ufw_stale.yml beside this file."""

import re

from ansible.errors import AnsibleFilterError

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


def ufw_stale(rules, user_rules, user6_rules, prefix="mlflowops"):
    """The rules of ufw's files whose comment starts with prefix and whose port and source no wanted rule has,
    as PORT SOURCE COMMENT (each source once: the IPv4 and IPv6 lines of an `any` rule are one rule)."""
    if not isinstance(rules, (list, tuple)):
        raise AnsibleFilterError(f"ufw_stale takes a list of 'PORT SOURCE COMMENT' rules, got {type(rules).__name__}")
    wanted = set()
    for rule in rules:
        parts = str(rule).split(" ", 2)
        if len(parts) != 3:
            raise AnsibleFilterError(f"ufw_stale: '{rule}' is not 'PORT SOURCE COMMENT'")
        wanted.add((parts[0], _source(parts[1])))
    stale, marker = [], prefix.encode().hex()
    for port, source, comment in sorted(_held(user_rules) | _held(user6_rules)):
        text = f"{port} {source} {bytes.fromhex(comment).decode(errors='replace')}"
        if comment.startswith(marker) and (port, source) not in wanted:
            stale.append(text)
    return stale


class FilterModule:
    def filters(self):
        return {"ufw_missing": ufw_missing, "ufw_stale": ufw_stale}
