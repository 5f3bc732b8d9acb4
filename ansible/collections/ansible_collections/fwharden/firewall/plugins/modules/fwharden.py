#!/usr/bin/python
# Copyright: fwharden maintainers
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Ansible module: apply, confirm or dry-run a fwharden profile.

Every decision comes from fwharden's own JSON: a dry run first says whether
anything would change and what (the ruleset difference, shown by --diff);
check mode stops there. Otherwise `fwharden apply` loads the profile, either
pending with a rollback window (the role then reconnects and confirms) or
confirmed at once once the kernel reads it back (auto_confirm).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: fwharden
short_description: Apply a fwharden firewall profile with a rollback window
description:
  - Applies a fwharden profile (nftables, one atomic transaction) the
    commit-confirmed way, or confirms an apply made earlier.
  - A dry run (C(fwharden apply PROFILE --dry-run)) comes first and decides
    C(changed); a profile already loaded and confirmed loads nothing.
  - With O(action=apply) and O(auto_confirm=false) the profile is loaded
    pending, with a rollback after O(timeout) seconds unless confirmed; the
    play reconnects over a fresh connection, then runs O(action=confirm)
    with the returned RV(token). The role C(fwharden) in the fwharden
    source tree does exactly that.
  - fwharden's lockout guard refuses (exit 4) a profile that would refuse
    new connections from the controller's SSH address (from
    C(SSH_CONNECTION), or, where sudo dropped it, from the connection of
    the sshd the task runs under); the task then fails with fwharden's
    message and nothing changes.
  - Failures name fwharden's exit code and what it means (3 invalid
    profile, 4 refused for safety, 5 read back wrong and rolled back,
    6 probe mismatch).
version_added: "0.1.0"
author:
  - fwharden maintainers (!UNKNOWN)
requirements:
  - fwharden on the managed host (C(/usr/sbin/fwharden) from the Debian package).
options:
  action:
    description:
      - V(apply) applies O(profile); V(confirm) confirms the pending apply
        whose token is O(token).
    type: str
    default: apply
    choices: [apply, confirm]
  profile:
    description:
      - The profile, by name (looked up in C(/etc/fwharden/profiles), then
        C(/usr/share/fwharden/profiles), then the built-in ones) or by path.
      - Required when O(action=apply).
    type: str
  token:
    description:
      - The token a pending apply returned (RV(token)).
      - Required when O(action=confirm).
    type: str
  timeout:
    description:
      - Seconds the rollback window stays open; unless confirmed by then,
        the previous ruleset comes back by itself.
    type: int
    default: 60
  auto_confirm:
    description:
      - Confirm as soon as the kernel reads the ruleset back, with no window
        and no reconnect (for hosts not reached over the network being
        changed).
    type: bool
    default: false
  binary:
    description:
      - The fwharden binary on the managed host.
    type: path
    default: /usr/sbin/fwharden
  global_args:
    description:
      - Extra global arguments for every fwharden call, before the
        subcommand (for example V(--state-dir) and a directory).
    type: list
    elements: str
    default: []
  netns:
    description:
      - Tests only. Run fwharden inside this named network namespace
        (C(ip netns exec NETNS)).
    type: str
attributes:
  check_mode:
    description: A dry run (C(apply --dry-run)); nothing is loaded.
    support: full
  diff_mode:
    description: The ruleset difference, as C(nft -f) text.
    support: full
notes:
  - Turn SSH multiplexing off for the reconnect (C(ControlMaster=no)); a
    ControlPersist connection reuses the old session and proves nothing.
"""

EXAMPLES = r"""
- name: Apply web-server with a 120 s rollback window
  fwharden.firewall.fwharden:
    profile: web-server
    timeout: 120
  register: fw

- name: Drop the connection
  ansible.builtin.meta: reset_connection

- name: Reconnect over a fresh connection
  ansible.builtin.wait_for_connection:
    timeout: 60
  when: fw.state == 'pending'

- name: Confirm (else the host rolls back by itself)
  fwharden.firewall.fwharden:
    action: confirm
    token: "{{ fw.token }}"
  when: fw.state == 'pending'

- name: Apply on a host reached another way, confirmed on read-back
  fwharden.firewall.fwharden:
    profile: /etc/fwharden/profiles/myapp.toml
    auto_confirm: true
"""

RETURN = r"""
state:
  description:
    - What the apply did. V(pending) (loaded, rolled back unless confirmed
      with RV(token)), V(confirmed) (loaded and confirmed, O(auto_confirm)),
      V(unchanged) (already loaded and confirmed, nothing loaded) or
      V(dry-run) (check mode).
  returned: when O(action=apply)
  type: str
  sample: pending
token:
  description: The token that confirms this apply (O(action=confirm)).
  returned: when RV(state=pending)
  type: str
  sample: 3f9c2a7e0b1d4c5e6f708192
fwharden:
  description: fwharden's own JSON output of the last call (C(--json)).
  returned: success
  type: dict
  sample: {"ok": true, "state": "pending", "changed": true}
"""

import json
import shlex

from ansible.module_utils.basic import AnsibleModule

# fwharden's exit codes (src/exit.rs), for a message a person can act on.
EXIT = {
    1: "runtime failure",
    2: "usage error",
    3: "invalid profile; nothing was changed",
    4: "refused for safety (lockout guard, or another apply running); nothing was changed",
    5: "applied, read back wrong, the previous ruleset was restored",
    6: "a probe did not match (or could not tell); nothing was applied",
}


def run(module, args):
    p = module.params
    cmd = []
    if p["netns"]:
        cmd += ["ip", "netns", "exec", p["netns"]]
    cmd += [p["binary"]] + p["global_args"] + ["--json"] + args
    rc, out, err = module.run_command(cmd)
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        doc = {}
    if rc != 0:
        why = doc.get("error") or err.strip() or out.strip()
        located = [
            "%s:%s:%s: %s" % (e.get("file"), e.get("line"), e.get("column"), e.get("message"))
            for e in doc.get("errors", [])
        ]
        if located:
            why += " (" + "; ".join(located) + ")"
        module.fail_json(
            msg="fwharden %s: exit %d (%s): %s"
            % (args[0], rc, EXIT.get(rc, "failure"), why),
            rc=rc,
            cmd=" ".join(shlex.quote(c) for c in cmd),
            stdout=out,
            stderr=err,
        )
    return doc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            profile=dict(type="str"),
            action=dict(type="str", default="apply", choices=["apply", "confirm"]),
            token=dict(type="str", no_log=False),
            timeout=dict(type="int", default=60),
            auto_confirm=dict(type="bool", default=False),
            binary=dict(type="path", default="/usr/sbin/fwharden"),
            global_args=dict(type="list", elements="str", default=[]),
            netns=dict(type="str"),
        ),
        required_if=[("action", "apply", ["profile"]), ("action", "confirm", ["token"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["action"] == "confirm":
        if module.check_mode:
            module.exit_json(changed=False)
        doc = run(module, ["confirm", "--token", p["token"]])
        module.exit_json(changed=False, fwharden=doc)

    dry = run(module, ["apply", p["profile"], "--dry-run"])
    result = dict(changed=bool(dry.get("changed")), state="dry-run", fwharden=dry)
    if module._diff and dry.get("diff"):
        result["diff"] = {"prepared": dry["diff"]}
    if module.check_mode or not result["changed"]:
        if not result["changed"]:
            result["state"] = "unchanged"
        module.exit_json(**result)

    args = ["apply", p["profile"], "--timeout", str(p["timeout"])]
    if p["auto_confirm"]:
        args.append("--auto-confirm")
    doc = run(module, args)
    result.update(changed=bool(doc.get("changed", True)), state=doc.get("state"), fwharden=doc)
    result["token"] = doc.get("token")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
