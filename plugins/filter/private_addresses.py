# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)
"""private_addresses: the address each inventory host has on the network between the tiers."""

import ipaddress

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: private_addresses
short_description: The private address of each named inventory host
version_added: 0.1.0
description:
  - >-
    For each inventory host name, its C(mlflowops_private_address) when the inventory sets one, else from its
    gathered facts the address of its default IPv4 route when that address is private (RFC 1918 and the like:
    an EC2 instance in a VPC), else the first private IPv4 address of its other interfaces in name order,
    leaving out loopback and container bridges (a DigitalOcean droplet, whose default route is on the public
    eth0 and whose VPC address is on eth1). Never a public address.
  - Fails with the host's name when none is known (facts not gathered, or no private address).
options:
  _input:
    description: Inventory host names.
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
"""

EXAMPLES = r"""
mlflow_backend_host: "{{ groups['mlflow_db'][:1] | mlflowops.tracking.private_addresses(hostvars) | first }}"
"""

RETURN = r"""
_value:
  description: One address per host, in the order of the input.
  type: list
  elements: str
"""


# interfaces whose addresses other hosts cannot reach: loopback, container and VM bridges, veth pairs
_LOCAL_INTERFACES = ("lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "vxlan")


def _private(address):
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        return False
    return parsed.is_private and not parsed.is_loopback and not parsed.is_link_local


def _from_facts(facts):
    default = (facts.get("default_ipv4") or {}).get("address")
    if default and _private(default):
        return default
    for interface in sorted(facts.get("interfaces") or []):
        if interface.startswith(_LOCAL_INTERFACES):
            continue
        address = ((facts.get(interface.replace("-", "_")) or {}).get("ipv4") or {}).get("address")
        if address and _private(address):
            return address
    return None


def _address(name, hostvars):
    if name not in hostvars:
        raise AnsibleFilterError(f"private_addresses: {name} is not an inventory host")
    host = hostvars[name]
    address = host.get("mlflowops_private_address")
    if address:
        return str(address)
    facts = host.get("ansible_facts") or {}
    if not facts.get("interfaces"):
        raise AnsibleFilterError(
            f"the private address of {name} is unknown: its facts were not gathered in this run "
            f"and the inventory sets no mlflowops_private_address for it"
        )
    address = _from_facts(facts)
    if not address:
        raise AnsibleFilterError(
            f"{name} has no private IPv4 address (the tiers never talk over a public one): put it on a private "
            f"network (a DigitalOcean or AWS VPC) or set mlflowops_private_address for it"
        )
    return str(address)


def private_addresses(hosts, hostvars):
    if isinstance(hosts, str):
        hosts = [hosts]
    return [_address(name, hostvars) for name in hosts]


class FilterModule:
    def filters(self):
        return {"private_addresses": private_addresses}
