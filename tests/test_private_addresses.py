"""The filter mlflowops.tracking.private_addresses picks the address the tiers talk over, never a public one."""

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "filter" / "private_addresses.py"
spec = importlib.util.spec_from_file_location("private_addresses", PLUGIN)
private_addresses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(private_addresses)


def droplet(default, **interfaces):
    """Facts as the network subset gathers them: interfaces, one key per interface, the default route."""
    facts = {"interfaces": sorted(interfaces), "default_ipv4": {"address": default, "interface": "eth0"}}
    for name, address in interfaces.items():
        facts[name.replace("-", "_")] = {"ipv4": {"address": address}}
    return {"ansible_facts": facts}


def test_the_default_route_when_it_is_private():
    hostvars = {"aws": droplet("172.31.5.9", lo="127.0.0.1", eth0="172.31.5.9")}
    assert private_addresses.private_addresses(["aws"], hostvars) == ["172.31.5.9"]


def test_a_droplet_talks_over_its_vpc_interface_not_its_public_default_route():
    hostvars = {"do": droplet("159.89.20.5", lo="127.0.0.1", docker0="172.17.0.1", eth0="159.89.20.5",
                              eth1="10.110.0.2", **{"br-1a2b": "172.18.0.1"})}
    assert private_addresses.private_addresses(["do"], hostvars) == ["10.110.0.2"]


def test_the_inventory_wins_and_keeps_the_order():
    hostvars = {"b": {"mlflowops_private_address": "10.0.0.2"},
                "a": droplet("10.0.0.1", eth0="10.0.0.1")}
    assert private_addresses.private_addresses(["b", "a"], hostvars) == ["10.0.0.2", "10.0.0.1"]


def test_a_host_with_public_addresses_only_stops_the_run():
    hostvars = {"web": droplet("159.89.20.7", lo="127.0.0.1", docker0="172.17.0.1", eth0="159.89.20.7")}
    with pytest.raises(AnsibleFilterError, match="web has no private IPv4 address"):
        private_addresses.private_addresses(["web"], hostvars)


def test_a_host_without_facts_is_named():
    with pytest.raises(AnsibleFilterError, match="the private address of db9 is unknown"):
        private_addresses.private_addresses(["db9"], {"db9": {}})
