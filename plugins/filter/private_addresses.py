# Copyright: mlflowops maintainers
# Apache License 2.0 (see LICENSE)
"""private_addresses: the address each inventory host has on the network between the tiers."""

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: private_addresses
short_description: The private address of each named inventory host
version_added: 0.1.0
description:
  - >-
    For each inventory host name, its C(mlflowops_private_address) when the inventory sets one, else the
    address of its default IPv4 route from its gathered facts (a DigitalOcean droplet in a VPC, an EC2
    instance: the private address, not the public C(ansible_host)).
  - Fails with the host's name when neither is known (facts not gathered, for example under C(--limit)).
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


def _address(name, hostvars):
    if name not in hostvars:
        raise AnsibleFilterError(f"private_addresses: {name} is not an inventory host")
    host = hostvars[name]
    address = host.get("mlflowops_private_address")
    if not address:
        facts = host.get("ansible_facts") or {}
        address = (facts.get("default_ipv4") or {}).get("address")
    if not address:
        raise AnsibleFilterError(
            f"the private address of {name} is unknown: its facts were not gathered in this run "
            f"(run without --limit, or with the whole site) and the inventory sets no "
            f"mlflowops_private_address for it"
        )
    return str(address)


def private_addresses(hosts, hostvars):
    if isinstance(hosts, str):
        hosts = [hosts]
    return [_address(name, hostvars) for name in hosts]


class FilterModule:
    def filters(self):
        return {"private_addresses": private_addresses}
