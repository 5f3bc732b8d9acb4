//! `fwharden metrics` against a real kernel: a host namespace holding a
//! profile and a peer namespace linked to it by a veth pair; real TCP
//! connections from the peer make the counters of the rule that accepts
//! them (named by its profile line) and of the drop policy rise, the text
//! passes the real `promtool check metrics` (Debian's prometheus package,
//! unpacked under target/ by scripts/deps), and the HTTP server answers a
//! scrape. Also: the counters of unchanged rules survive an element delta.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::prom::*;
use common::readme::readme_blocks;
use common::*;
use fwharden::netns::Netns;

const HOST: &str = "10.96.0.1";
const PEER: &str = "10.96.0.2";

/// The profile the tests apply; `extra` is appended to group admin (a
/// change of elements only), `rules` to the end (a change of rules).
fn profile(extra: &str, rules: &str) -> String {
    format!(
        "# tests/metrics.rs\n[groups]\nadmin = [\"{PEER}\"{extra}]\nblocked = [\"198.51.100.0/28\"]\n\n\
         [[rule]]\ndeny = \"all\"\nfrom = \"blocked\"\n\n\
         [[rule]]\nallow = \"ssh\"\nfrom = \"admin\"\n{rules}"
    )
}

/// The line of `allow = "ssh"` in [`profile`]: what the metrics must name.
const SSH_LINE: &str = "10";

struct Lab {
    host: Host,
    peer: Netns,
    /// `observed.toml` as [`profile`] writes it, and two changes of it:
    /// group admin widened (an element delta), an HTTP rule added (a
    /// change of rules). The file name stays: it is in every comment.
    profiles: tempfile::TempDir,
    wider: tempfile::TempDir,
    http: tempfile::TempDir,
    _listener: TcpListener,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = |text: String| {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("observed.toml"), text).unwrap();
            d
        };
        let host = Host::new(tag);
        let peer = Netns::create(&format!("{tag}p")).unwrap();
        host.ns
            .link(&peer, &[&format!("{HOST}/24")], &[&format!("{PEER}/24")])
            .unwrap();
        let listener = host
            .ns
            .run_in(|| TcpListener::bind("0.0.0.0:22"))
            .unwrap()
            .unwrap();
        Lab {
            host,
            peer,
            profiles: dir(profile("", "")),
            wider: dir(profile(", \"10.96.0.3\"", "")),
            http: dir(profile("", "\n[[rule]]\nallow = \"http\"\n")),
            _listener: listener,
        }
    }

    fn fw(&self, code: i32, args: &[&str]) -> std::process::Output {
        self.host.expect_in(self.profiles.path(), code, args)
    }

    /// Applies `observed` from `dir`, confirmed at once: what it printed.
    fn apply_from(&self, dir: &tempfile::TempDir) -> String {
        let args = ["apply", "observed", "--auto-confirm", "--no-probe"];
        stdout(&self.host.expect_in(dir.path(), 0, &args))
    }

    fn metrics(&self) -> String {
        stdout(&self.fw(0, &["metrics"]))
    }

    /// `count` new TCP connections from the peer to the host's `port`;
    /// how many were answered.
    fn connect(&self, port: u16, count: usize) -> usize {
        let addr: SocketAddr = format!("{HOST}:{port}").parse().unwrap();
        self.peer
            .run_in(|| {
                (0..count)
                    .filter(|_| {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
                    })
                    .count()
            })
            .unwrap()
    }
}

const SSH_ACCEPTS: [&str; 4] = [
    "chain=\"input\"",
    "file=\"observed.toml\"",
    "line=\"10\"",
    "action=\"accept\"",
];

fn ssh_accepts(text: &str) -> u64 {
    value(text, "fwharden_rule_packets_total", &SSH_ACCEPTS)
        .unwrap_or_else(|| panic!("no sample for the ssh rule (line {SSH_LINE}):\n{text}"))
}

fn policy_drops(text: &str) -> u64 {
    value(
        text,
        "fwharden_policy_packets_total",
        &["chain=\"input\"", "policy=\"drop\""],
    )
    .unwrap_or_else(|| panic!("no policy sample:\n{text}"))
}

#[test]
#[ignore = "needs root"]
fn metrics_count_real_traffic_by_profile_line_and_pass_promtool() {
    let test = "metrics_count_real_traffic_by_profile_line_and_pass_promtool";
    needs_root(test);
    let Some(promtool) = promtool(test) else {
        return;
    };
    let lab = Lab::new("met");
    lab.fw(0, &["apply", "observed", "--auto-confirm", "--no-probe"]);

    let before = lab.metrics();
    promtool_check(&promtool, &before).unwrap();
    assert!(
        before.contains("fwharden_kernel_state{state=\"confirmed\"} 1\n"),
        "{before}"
    );
    assert!(before.contains("fwharden_drift 0\n"), "{before}");
    assert!(
        before.contains(
            "fwharden_last_apply_timestamp_seconds{profile=\"observed\",result=\"confirmed\"} "
        ),
        "{before}"
    );
    assert!(value(
        &before,
        "fwharden_rule_packets_total",
        &["profile=\"observed\""]
    )
    .is_some());

    assert_eq!(lab.connect(22, 3), 3, "the profile allows ssh from admin");
    assert_eq!(lab.connect(2323, 2), 0, "no rule allows port 2323");
    let after = lab.metrics();
    assert!(
        ssh_accepts(&after) >= ssh_accepts(&before) + 3,
        "three connections, three first packets accepted by observed.toml:{SSH_LINE}:\nbefore:\n{before}\nafter:\n{after}"
    );
    assert!(
        policy_drops(&after) >= policy_drops(&before) + 2,
        "two probes of port 2323 fall to the drop policy:\nbefore:\n{before}\nafter:\n{after}"
    );

    // --output: the textfile collector's file, written whole.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("fwharden.prom");
    lab.fw(0, &["metrics", "--output", file.to_str().unwrap()]);
    let written = std::fs::read_to_string(&file).unwrap();
    promtool_check(&promtool, &written).unwrap();
    assert!(ssh_accepts(&written) >= ssh_accepts(&after));
    let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");

    // --listen: a scrape over HTTP inside the host namespace.
    let port = 9798;
    let mut cmd = lab.host.fw();
    cmd.args(["metrics", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Server(cmd.spawn().unwrap());
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(
        wait_until(Duration::from_secs(30), || scrape(&lab.host.ns, port, get)
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))),
        "the server answers within 30 s"
    );
    let answer = scrape(&lab.host.ns, port, get).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_check(&promtool, body).unwrap();
    assert!(ssh_accepts(body) >= ssh_accepts(&after));
    let other = scrape(&lab.host.ns, port, "GET /other HTTP/1.1\r\n\r\n").unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let refused = scrape(&lab.host.ns, port, &huge).unwrap_or_default();
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 400"),
        "{refused}"
    );
    let again = scrape(&lab.host.ns, port, get).unwrap();
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "still serving after a bad request"
    );

    readme_example_is_what_metrics_prints(&after);
}

/// The README's example: every family it shows has HELP and TYPE in the
/// real output, and each sample it shows has the real label names.
fn readme_example_is_what_metrics_prints(real: &str) {
    let blocks = readme_blocks("## Observing: metrics and log");
    // The first block is `status`'s (see below), then metrics'.
    let example = &blocks[1];
    // Label values are quoted and may hold commas: read them as the
    // format says (a backslash escapes the next character).
    let keys = |line: &str| -> (String, Vec<String>) {
        let at = line.find(['{', ' ']).unwrap();
        let (name, mut rest) = (line[..at].to_string(), &line[at..]);
        let mut keys = Vec::new();
        if let Some(labels) = rest.strip_prefix('{') {
            rest = labels;
            while let Some((key, after)) = rest.split_once("=\"") {
                keys.push(key.trim_start_matches(',').to_string());
                let mut chars = after.char_indices();
                let mut end = after.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                rest = &after[end + 1..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
        (name, keys)
    };
    for line in example.lines().filter(|l| !l.starts_with('#')) {
        let (name, want) = keys(line);
        assert!(
            real.contains(&format!("# TYPE {name} ")),
            "README shows {name}, which metrics does not print"
        );
        if let Some(got) = real
            .lines()
            .find(|l| !l.starts_with('#') && keys(l).0 == name)
        {
            assert_eq!(keys(got).1, want, "README's labels of {name}");
        }
    }
    for line in example.lines().filter(|l| l.starts_with('#')) {
        assert!(
            real.contains(line),
            "README shows {line:?}, metrics prints otherwise"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn counters_survive_an_element_delta_and_an_unchanged_apply_and_restart_on_a_replace() {
    let test = "counters_survive_an_element_delta_and_an_unchanged_apply_and_restart_on_a_replace";
    needs_root(test);
    let lab = Lab::new("metd");
    let first = lab.apply_from(&lab.profiles);
    assert!(
        !first.contains("counters"),
        "a first apply restarts nothing:\n{first}"
    );
    assert_eq!(lab.connect(22, 3), 3);
    let counted = ssh_accepts(&lab.metrics());
    assert!(counted >= 3, "three connections accepted");

    let delta = lab.apply_from(&lab.wider);
    assert!(
        delta.contains("counters kept: only set elements changed"),
        "{delta}"
    );
    let kept = ssh_accepts(&lab.metrics());
    assert!(
        kept >= counted,
        "the element delta reset the ssh rule's counter: {counted} -> {kept}"
    );
    assert_eq!(lab.connect(22, 2), 2, "admin still gets in after the delta");
    let grown = ssh_accepts(&lab.metrics());
    assert!(
        grown >= kept + 2,
        "the kept counter goes on counting: {kept} -> {grown}"
    );

    let same = lab.apply_from(&lab.wider);
    assert!(same.contains("unchanged"), "{same}");
    assert!(
        ssh_accepts(&lab.metrics()) >= grown,
        "an unchanged apply touches nothing"
    );

    let replaced = lab.apply_from(&lab.http);
    assert!(
        replaced.contains("counters restarted: the table was replaced whole"),
        "{replaced}"
    );
    let text = lab.metrics();
    assert_eq!(
        ssh_accepts(&text),
        0,
        "a whole-table replace starts every counter again:\n{text}"
    );
}

#[test]
#[ignore = "needs root"]
fn metrics_report_bans_and_a_pending_apply() {
    let test = "metrics_report_bans_and_a_pending_apply";
    needs_root(test);
    let lab = Lab::new("metb");
    let bans = tempfile::tempdir().unwrap();
    std::fs::write(
        bans.path().join("observed.toml"),
        profile("", "\n[bans]\nenabled = true\ntimeout = \"10m\"\n"),
    )
    .unwrap();
    let args = ["apply", "observed", "--timeout", "600", "--no-probe"];
    lab.host.expect_in(bans.path(), 0, &args);
    let pending = lab.metrics();
    assert!(
        pending.contains("fwharden_kernel_state{state=\"pending\"} 1\n"),
        "{pending}"
    );
    let deadline = value_of(&pending, "fwharden_pending_deadline_timestamp_seconds ");
    let now = now_ms() as f64 / 1000.0;
    assert!(
        deadline > now + 500.0 && deadline < now + 700.0,
        "the deadline is 600 s away: {deadline} (now {now})"
    );
    assert!(pending.contains(
        "fwharden_last_apply_timestamp_seconds{profile=\"observed\",result=\"pending\"} "
    ));
    lab.host.expect_in(bans.path(), 0, &["confirm"]);
    let confirmed = lab.metrics();
    assert!(confirmed.contains("fwharden_kernel_state{state=\"confirmed\"} 1\n"));
    assert!(!confirmed.contains("\nfwharden_pending_deadline_timestamp_seconds "));

    assert_eq!(lab.connect(22, 1), 1, "admin gets in before the ban");
    let before = lab.metrics();
    assert!(
        before.contains("fwharden_ban_set_elements{set=\"ban_v4\"} 0\n"),
        "{before}"
    );
    lab.host.expect_in(bans.path(), 0, &["ban", PEER]);
    assert_eq!(lab.connect(22, 2), 0, "a banned source cannot connect");
    let after = lab.metrics();
    if let Some(p) = promtool(test) {
        promtool_check(&p, &after).unwrap();
    }
    assert!(
        after.contains("fwharden_ban_set_elements{set=\"ban_v4\"} 1\n"),
        "{after}"
    );
    let dropped = |t: &str| {
        value(
            t,
            "fwharden_ban_dropped_packets_total",
            &["chain=\"input\""],
        )
        .unwrap_or_else(|| panic!("no ban drops sample:\n{t}"))
    };
    assert!(
        dropped(&after) >= dropped(&before) + 2,
        "two connection attempts of a banned source, dropped by the ban table:\n{after}"
    );
}

#[test]
#[ignore = "needs root"]
fn node_exporter_serves_the_textfile_metrics_writes() {
    let test = "node_exporter_serves_the_textfile_metrics_writes";
    needs_root(test);
    let Some(exporter) = node_exporter(test) else {
        return;
    };
    let lab = Lab::new("metn");
    lab.fw(0, &["apply", "observed", "--auto-confirm", "--no-probe"]);
    assert_eq!(lab.connect(22, 2), 2);
    // Under the host's directory: its Drop also ends the exporter.
    let dir = lab.host.dir().join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fwharden.prom");
    lab.fw(0, &["metrics", "--output", file.to_str().unwrap()]);

    let port = 9100;
    let mut cmd = lab.host.ns.command(exporter.to_str().unwrap());
    cmd.args([
        "--collector.disable-defaults".to_string(),
        "--collector.textfile".into(),
        format!("--collector.textfile.directory={}", dir.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _exporter = Server(cmd.spawn().unwrap());
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(
        wait_until(Duration::from_secs(60), || scrape(&lab.host.ns, port, get)
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))),
        "node_exporter answers within 60 s"
    );
    let scraped = scrape(&lab.host.ns, port, get).unwrap();
    assert!(
        scraped.contains("\nnode_textfile_scrape_error 0\n"),
        "node_exporter read the file without error:\n{scraped}"
    );
    assert!(
        ssh_accepts(&scraped) >= 2,
        "node_exporter serves the ssh rule's counter:\n{scraped}"
    );
    assert!(scraped.contains("fwharden_kernel_state{state=\"confirmed\"} 1\n"));
}

/// `status` says what is allowed now, one profile rule a line, with what
/// each rule matched: three connections accepted by the ssh rule, two
/// refused by the policy, in words and in JSON.
#[test]
#[ignore = "needs root"]
fn status_says_what_each_profile_rule_allows_and_has_seen() {
    needs_root("status_says_what_each_profile_rule_allows_and_has_seen");
    let lab = Lab::new("stw");
    lab.fw(0, &["apply", "observed", "--auto-confirm", "--no-probe"]);
    assert_eq!(lab.connect(22, 3), 3, "the profile allows ssh from admin");
    assert_eq!(lab.connect(2323, 2), 0, "no rule allows port 2323");

    let text = stdout(&lab.fw(0, &["status"]));
    assert!(
        text.contains(
            "rules of observed (packets matched since the table was loaded):\n  input:\n"
        ),
        "{text}"
    );
    let ssh =
        format!("    observed.toml:{SSH_LINE}  allow 22/tcp from admin (1 prefix): 3 packets (");
    assert!(text.contains(&ssh), "{ssh}\nnot in:\n{text}");
    assert!(
        text.contains(
            "    observed.toml:6   deny all traffic from blocked (1 prefix): no packets\n"
        ),
        "{text}"
    );
    // At least the two refused connections (a stray multicast packet of
    // the peer may come on top).
    assert!(text.contains("  input policy drop: "), "{text}");
    assert!(!text.contains("  input policy drop: no packets"), "{text}");
    assert!(
        text.contains(
            "    defaults          established: allow established, related traffic from anywhere: "
        ),
        "{text}"
    );

    // The README's excerpt is this output, but for the counts of packets
    // that depend on how the kernel closed the connections.
    let block = readme_blocks("## Observing: metrics and log").remove(0);
    for line in block.lines() {
        let words = line.rsplit_once(": ").map_or(line, |(w, _)| w);
        assert!(text.contains(words), "README: {line:?} not in:\n{text}");
    }

    let v: serde_json::Value =
        serde_json::from_slice(&lab.fw(0, &["--json", "status"]).stdout).unwrap();
    let rules = v["rules"]["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    let rule = rules
        .iter()
        .find(|r| r["origin"] == format!("observed.toml:{SSH_LINE}"))
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(rule["packets"], 3, "{rule}");
    assert_eq!(rule["what"], "22/tcp", "{rule}");
    assert_eq!(rule["from"], "admin (1 prefix)", "{rule}");
    let input = v["rules"]["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["chain"] == "input"))
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(input["policy"], "drop", "{input}");
    assert!(input["packets"].as_u64().is_some_and(|n| n >= 2), "{input}");
}
