"""Honest check mode: on a converged host, the scenario's converge in --check --diff reports no change."""

import re


def test_check_mode_reports_no_change_on_converged_hosts(check_converge):
    assert check_converge.returncode == 0, check_converge.stdout[-3000:]
    recap = check_converge.stdout.split("PLAY RECAP")[-1]
    counts = re.findall(r"^(\S+)\s+:.*?changed=(\d+)", recap, re.M)
    assert counts and all(count == "0" for _, count in counts), recap
