#!/usr/bin/python3
"""Ansible module: apply, confirm or dry-run a fwharden profile.

Every decision comes from fwharden's own JSON: a dry run first says whether
anything would change and what (the ruleset difference, shown by --diff);
check mode stops there. Otherwise `fwharden apply` loads the profile, either
pending with a rollback window (the role then reconnects and confirms) or
confirmed at once once the kernel reads it back (auto_confirm).
"""

import json
import shlex

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: fwharden
short_description: Apply a fwharden firewall profile with a rollback window
options:
  profile: {description: Profile name or path (apply)., type: str}
  action: {description: apply or confirm., type: str, default: apply, choices: [apply, confirm]}
  token: {description: The token an apply printed (confirm)., type: str}
  timeout: {description: Seconds until the rollback unless confirmed., type: int, default: 60}
  auto_confirm: {description: Confirm once the kernel reads the ruleset back (no window)., type: bool, default: false}
  binary: {description: The fwharden binary., type: str, default: /usr/sbin/fwharden}
  global_args: {description: Extra global arguments (--state-dir DIR, --profile-dir DIR)., type: list, elements: str, default: []}
  netns: {description: "Tests only: run fwharden inside this named network namespace.", type: str}
"""

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
            binary=dict(type="str", default="/usr/sbin/fwharden"),
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
