//! `fwharden show` with no profile: the ruleset the kernel holds, read
//! back inside a throwaway namespace and printed as `show PROFILE` prints
//! the profile it came from.

mod common;

use common::*;

#[test]
#[ignore = "needs root"]
fn bare_show_prints_the_loaded_ruleset_as_show_profile_does() {
    needs_root("bare_show_prints_the_loaded_ruleset_as_show_profile_does");
    let host_before = host_tables();
    let host = Host::new("showloaded");

    // Nothing loaded: said on stderr, nothing on stdout, not an error.
    let out = host.expect(0, &["show"]);
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no table inet fwharden is loaded"),
        "{}",
        stderr(&out)
    );
    let out = host.expect(0, &["--json", "show"]);
    assert_eq!(stdout(&out).trim(), "null");

    for name in ["vps-profile", "web-server"] {
        host.confirm_profile(name);
        let loaded = host.expect(0, &["show"]);
        let compiled = shipped(&["show", name]);
        assert!(compiled.status.success(), "{}", stderr(&compiled));
        // The apply came from no SSH client here, so no hatch was armed and
        // the kernel holds exactly the compiled ruleset.
        assert_eq!(
            stdout(&loaded),
            stdout(&compiled),
            "{name}: bare show differs from `show {name}`"
        );
        let loaded = host.expect(0, &["--json", "show"]);
        let compiled = shipped(&["--json", "show", name]);
        let a: serde_json::Value = serde_json::from_slice(&loaded.stdout).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&compiled.stdout).unwrap();
        assert_eq!(a, b, "{name}: the read-back model differs");
    }
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}
