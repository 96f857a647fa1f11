"""The filters mlflowops.tracking.ufw_missing (which allow rules ufw's files do not hold, so that the firewall role
calls ufw for those only) and ufw_stale (which rules the role made that no wanted rule has, so that it deletes
those)."""

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "filter" / "ufw_missing.py"
spec = importlib.util.spec_from_file_location("ufw_missing", PLUGIN)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
missing = module.ufw_missing
stale = module.ufw_stale


def tuple_line(port, source, comment, destination="0.0.0.0/0"):
    """A rule as ufw writes it into user.rules or user6.rules."""
    return (f"### tuple ### allow tcp {port} {destination} any {source} in comment={comment.encode().hex()}\n"
            f"-A ufw-user-input -p tcp --dport {port} -j ACCEPT\n")


V4 = tuple_line(22, "0.0.0.0/0", "mlflowops ssh") + tuple_line(443, "0.0.0.0/0", "mlflowops web") \
    + tuple_line(5432, "10.0.0.5", "mlflowops postgresql client")
V6 = tuple_line(22, "::/0", "mlflowops ssh", "::/0") + tuple_line(443, "::/0", "mlflowops web", "::/0")


def test_a_converged_host_misses_nothing():
    wanted = ["22 any mlflowops ssh", "443 any mlflowops web", "5432 10.0.0.5 mlflowops postgresql client"]
    assert missing(wanted, V4, V6) == []


def test_any_needs_both_families_when_ufw_manages_ipv6():
    # the IPv4 rule of port 80 deleted by hand, its IPv6 twin left: still missing
    v6 = V6 + tuple_line(80, "::/0", "mlflowops web", "::/0")
    assert missing(["80 any mlflowops web", "443 any mlflowops web"], V4, v6) == ["80 any mlflowops web"]
    # only the IPv6 one deleted: missing too, unless ufw leaves IPv6 alone
    v4 = V4 + tuple_line(80, "0.0.0.0/0", "mlflowops web")
    assert missing(["80 any mlflowops web"], v4, V6) == ["80 any mlflowops web"]
    assert missing(["80 any mlflowops web"], v4, "", ipv6=False) == []


def test_a_rule_counts_only_with_its_port_source_and_comment():
    assert missing(["5432 10.0.0.6 mlflowops postgresql client"], V4, V6) == [
        "5432 10.0.0.6 mlflowops postgresql client"]
    assert missing(["22 any mlflowops web"], V4, V6) == ["22 any mlflowops web"]
    # the same port and source without the role's comment (made by hand): ufw is asked, which adds the comment
    hand = tuple_line(8080, "0.0.0.0/0", "by hand")
    assert missing(["8080 any mlflowops web"], hand, "", ipv6=False) == ["8080 any mlflowops web"]


def test_addresses_compare_as_ufw_stores_them():
    v4 = tuple_line(22, "192.0.2.7/32", "mlflowops ssh") + tuple_line(22, "192.0.2.0/24", "mlflowops ssh")
    v6 = tuple_line(22, "2001:db8::7/128", "mlflowops ssh", "::/0")
    wanted = ["22 192.0.2.7 mlflowops ssh", "22 192.0.2.0/24 mlflowops ssh", "22 2001:db8::7 mlflowops ssh",
              "22 2001:db8::8 mlflowops ssh"]
    assert missing(wanted, v4, v6) == ["22 2001:db8::8 mlflowops ssh"]


def test_files_not_read_yet_miss_everything_and_bad_input_stops():
    assert missing(["22 any mlflowops ssh"], "", "") == ["22 any mlflowops ssh"]
    with pytest.raises(AnsibleFilterError, match="PORT SOURCE COMMENT"):
        missing(["22 any"], V4, V6)
    with pytest.raises(AnsibleFilterError, match="list"):
        missing("22 any mlflowops ssh", V4, V6)


def test_stale_rules_are_the_role_s_own_that_nothing_asks_for():
    v4 = V4 + tuple_line(5432, "10.0.0.9/32", "mlflowops postgresql client") + tuple_line(8080, "0.0.0.0/0", "by hand") \
        + tuple_line(22, "192.0.2.7", "mlflowops ssh (controller)")
    v6 = V6 + tuple_line(22, "2001:db8::7/128", "mlflowops ssh", "::/0")
    wanted = ["22 192.0.2.7 mlflowops ssh (controller)", "443 any mlflowops web",
              "5432 10.0.0.5/32 mlflowops postgresql client"]
    # port 22 from any (both families: one rule), the narrowed client and the IPv6 SSH source; never the hand-made
    # rule, and a wanted port and source count whatever the comment
    assert stale(wanted, v4, v6) == ["22 2001:db8::7 mlflowops ssh", "22 any mlflowops ssh",
                                     "5432 10.0.0.9 mlflowops postgresql client"]
    assert stale(wanted + ["22 any mlflowops web", "22 2001:db8::7/128 x"], v4, v6) == [
        "5432 10.0.0.9 mlflowops postgresql client"]
    assert stale([], "", "") == []
    with pytest.raises(AnsibleFilterError, match="PORT SOURCE COMMENT"):
        stale(["22 any"], V4, V6)
