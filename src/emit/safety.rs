//! The safety net every emitted loading script carries (`load.sh`,
//! `ufw.sh`, `reload.sh`): iptables-apply's idea, done as `apply` does it.
//!
//! The order, and which steps can change the firewall:
//! 1. options: `--timeout N` (or `FWHARDEN_ROLLBACK_TIMEOUT`, default 60 s),
//!    `--no-rollback`, `--force` (skips the lockout check only), and the
//!    two other modes `--confirm [DIR]` and `--rollback [DIR]`;
//! 2. the format's own refusals (`preflight`): nothing changed yet;
//! 3. the SSH lockout check ([`super::lockout`]): the client from
//!    `SSH_CONNECTION`/`SSH_CLIENT`, else (sudo drops them) from the
//!    established connections to a local sshd (`ss`), preferring the one
//!    held by an sshd this script descends from; every candidate is
//!    checked when none is an ancestor. A refusal exits 4 (fwharden's
//!    lockout exit code), nothing changed;
//! 4. save the current state (`save_state`) into a private directory
//!    (`mktemp -d`, 0700) and start the restorer: a copy of the script,
//!    run by `setsid nohup` with stdin/stdout/stderr redirected, so it has
//!    its own session and process group and ignores SIGHUP. The script
//!    waits until the restorer has written its pid; if it never does,
//!    nothing is loaded;
//! 5. load (`load_rules`), the only step that changes the firewall. If it
//!    fails, the restorer is told to put the saved state back at once; if
//!    the script dies during the load (its session killed), the restorer
//!    sees it gone and puts the state back at once. The window (the
//!    timeout) opens when the load is done, as `apply`'s does after its
//!    commit: a slow load (ufw.sh's commands) cannot eat it;
//! 6. print what to type: `--confirm DIR` renames the `armed` marker to
//!    `confirmed`; at the deadline the restorer renames it to `restoring`.
//!    Both are one rename(2) of the same file: exactly one wins, so a
//!    confirm at the deadline is either in time or told "too late".
//!
//! The restorer is not moved out of the login session's cgroup: a logind
//! that kills the whole session on logout (`KillUserProcesses=yes`, not
//! Debian's default) or `loginctl terminate-session` kill it too, and the
//! new rules stay. `apply`'s watcher escapes that; these scripts do not.

use std::fmt::Write;

use super::lockout;

/// What one script adds to the net: how it saves and restores
/// the state it changes, and how it loads.
pub struct Script<'a> {
    /// Shell function definitions: `preflight`, `save_state DIR`,
    /// `restore_state DIR` (returns non-zero when any step failed) and
    /// `load_rules`.
    pub functions: &'a str,
    /// The lockout table ([`lockout::table`]).
    pub table: &'a str,
    /// Shell commands printing more table lines, inserted where a line
    /// `existing` stands in the table (ufw.sh: the ufw rules kept ahead of
    /// the profile's); empty for none.
    pub existing: &'a str,
}

/// Shared shell functions: saving and restoring one family's filter table
/// exactly.
pub const RESTORE_TABLE: &str = r#"# save_filter BIN FILE: the filter table as BIN-save shows it, or nothing
# when there is none (iptables-nft before anything used it: BIN-save -t
# filter would print an empty one).
save_filter() {
  "$1-save" > "$2.all" || return 1
  awk '/^[*]filter/ { p = 1 } p { print } p && /^COMMIT/ { exit }' "$2.all" > "$2"
}
# restore_table BIN FILE FAMILY: puts back the filter table FILE holds,
# counters included. When there was none, it is emptied, then deleted with
# nft when nft is there (an empty table with accept policies passes the
# same packets).
restore_table() {
  if grep -q '^[*]filter' "$2"; then
    "$1-restore" -w 10 -c < "$2"
  else
    printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' | "$1-restore" -w 10 || return 1
    if "$1" -V 2>/dev/null | grep -q nf_tables && command -v nft >/dev/null 2>&1; then
      nft delete table "$3" filter 2>/dev/null || true
    fi
  fi
}
"#;

/// The net itself, after the script's functions.
const NET: &str = r#"# ---- The safety net (see the top of this file) ----
me=$(basename "$0")
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat <<EOF
usage: $me [--timeout SECONDS] [--no-rollback] [--force]
       $me --confirm [DIR]
       $me --rollback [DIR]
Checks that a new SSH connection from your address would still be accepted
(exit 4 if not; --force skips the check), saves the current rules, loads,
and puts the saved rules back after SECONDS (default 60, or
FWHARDEN_ROLLBACK_TIMEOUT) unless --confirm comes first, from a new SSH
login. --no-rollback loads with no timer. --rollback puts them back now.
DIR is the rollback directory the load printed (default: the only one
pending under ${TMPDIR:-/tmp}).
EOF
}

fail() {
  echo "$me: $*" >&2
  exit 1
}

plain_addr() {
  case $1 in
    '' | *[!0-9a-fA-F:.]*) return 1 ;;
    *[:.]*) return 0 ;;
  esac
  return 1
}

plain_port() {
  case $1 in
    '' | *[!0-9]*) return 1 ;;
  esac
}

# The SSH clients to check, one "CLIENT SERVER PORT HOW" line each.
ssh_clients() {
  set -f
  # shellcheck disable=SC2086 # split on purpose, globbing off
  set -- ${SSH_CONNECTION:-}
  set +f
  if [ $# -eq 4 ] && plain_addr "$1" && plain_addr "$3" && plain_port "$4"; then
    echo "$1 $3 $4 SSH_CONNECTION"
    return 0
  fi
  if [ -n "${SSH_CONNECTION:-}" ]; then
    echo "$me: SSH_CONNECTION is set but unreadable: looking elsewhere for the SSH client" >&2
  fi
  set -f
  # shellcheck disable=SC2086
  set -- ${SSH_CLIENT:-}
  set +f
  if [ $# -eq 3 ] && plain_addr "$1" && plain_port "$3"; then
    echo "$1 - $3 SSH_CLIENT"
    return 0
  fi
  if [ -n "${SSH_CLIENT:-}" ]; then
    echo "$me: SSH_CLIENT is set but unreadable: looking elsewhere for the SSH client" >&2
  fi
  sshd_clients
}

# Without the variables (sudo drops them): the peers of the established
# connections to a port a local sshd listens on. The one whose socket an
# ancestor of this script holds is the one of the operator. Without one, every
# candidate is checked.
sshd_clients() {
  if ! command -v ss >/dev/null 2>&1; then
    echo "$me: no SSH_CONNECTION, and no ss to find the SSH client among sshd's connections" >&2
    return 0
  fi
  ancestors=
  pid=$$
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    ancestors="$ancestors $pid"
    pid=$(sed -n 's/.*) [A-Za-z] \([0-9]*\) .*/\1/p' "/proc/$pid/stat" 2>/dev/null) || break
  done
  {
    ss -tlnpH 2>/dev/null | sed 's/^/L /'
    ss -tnpH state established 2>/dev/null | sed 's/^/E /'
  } | awk -v anc="$ancestors" '
    function port_of(a) { match(a, /:[0-9]+$/); return substr(a, RSTART + 1) }
    function host_of(a) {
      match(a, /:[0-9]+$/)
      a = substr(a, 1, RSTART - 1)
      gsub(/^\[|\]$/, "", a)
      sub(/%.*/, "", a)
      return a
    }
    function users(l) { return match(l, /users:.*/) ? substr(l, RSTART) : "" }
    function is_sshd(u) { return u ~ /\("sshd(-session)?",/ }
    BEGIN { n = split(anc, A, " "); for (i = 1; i <= n; i++) mine["pid=" A[i] ","] = 1 }
    $1 == "L" && is_sshd(users($0)) { listening[port_of($5)] = 1; next }
    $1 == "E" {
      u = users($0)
      if (!is_sshd(u) || !(port_of($4) in listening)) next
      line = host_of($5) " " host_of($4) " " port_of($4)
      cand[++count] = line
      for (p in mine) if (index(u, p)) own[count] = 1
    }
    END {
      for (i = 1; i <= count; i++) if (i in own) { print cand[i] " ss (an sshd this script descends from)"; found = 1 }
      if (found) exit
      for (i = 1; i <= count; i++)
        print cand[i] ((count == 1) ? " ss (the only connection to sshd)" : " ss (one of " count " connections to sshd, each checked)")
    }'
}

# The interface holding the server address: where the connection arrives.
iface_of() {
  s=$1
  case $s in ::ffff:*.*) s=${s#::ffff:} ;; esac
  [ "$s" != - ] || return 0
  command -v ip >/dev/null 2>&1 || return 0
  ip -o addr show 2>/dev/null | awk -v a="$s" '{ split($4, x, "/"); if (x[1] == a) { sub(/@.*/, "", $2); print $2; exit } }'
}

check_ssh() {
  if [ "$force" = yes ]; then
    echo "$me: --force: the SSH lockout check is skipped" >&2
    return 0
  fi
  clients=$(ssh_clients)
  if [ -z "$clients" ]; then
    echo "$me: no SSH client found (no SSH_CONNECTION or SSH_CLIENT, no established connection to a local sshd): the lockout check has no one to check" >&2
    return 0
  fi
  refused=
  table=$(ssh_table | awk -v ex="$(existing_rules)" '$0 == "existing" { if (ex != "") print ex; next } { print }')
  while read -r client server port how; do
    iface=$(iface_of "$server")
    answer=$(printf '%s\n' "$table" | awk -v src="$client" -v port="$port" -v iface="$iface" "$CHECK_AWK")
    on=${iface:+ arriving on $iface}
    case $answer in
      accept)
        echo "$me: lockout check: a new SSH connection from $client to port $port$on is accepted (client found by $how)" >&2
        ;;
      unreadable)
        echo "$me: the SSH client address $client (found by $how) cannot be read: refused, nothing was changed; pass --force if you have another way in (a console)" >&2
        refused=yes
        ;;
      *)
        echo "$me: these rules would refuse new SSH connections from your address $client to port $port$on (client found by $how): ${answer#* }. Your current session would survive (established traffic is accepted first), but you could not log in again. Allow SSH from your address in the profile, or pass --force if you have another way in (a console). Nothing was changed." >&2
        refused=yes
        ;;
    esac
  done <<EOF
$clients
EOF
  [ -z "$refused" ] || exit 4
}

arm() {
  command -v setsid >/dev/null 2>&1 || fail "setsid (util-linux) is missing, so the rollback timer cannot outlive this session: install it, or pass --no-rollback. Nothing was changed."
  rb=$(mktemp -d "${TMPDIR:-/tmp}/fwharden-rollback.XXXXXX") || fail "cannot create a private directory for the saved rules. Nothing was changed."
  chmod 700 "$rb"
  if ! save_state "$rb"; then
    rm -rf "$rb"
    fail "saving the current rules failed. Nothing was changed."
  fi
  cp "$here/$me" "$rb/script"
  echo "$me" > "$rb/name"
  echo $$ > "$rb/loader"
  : > "$rb/armed"
  setsid nohup sh "$rb/script" --restorer "$rb" < /dev/null > "$rb/log" 2>&1 &
  tries=0
  until [ -s "$rb/pid" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
      rm -f "$rb/armed"
      fail "the rollback timer did not start (see $rb/log). Nothing was changed."
    fi
    sleep 0.1 2> /dev/null || sleep 1
  done
}

# The detached restorer: waits for the deadline, a confirm or a rollback
# request, then puts the saved state back unless confirmed.
restorer() {
  rb=$1
  me=$(cat "$rb/name")
  echo $$ > "$rb/pid.new"
  mv "$rb/pid.new" "$rb/pid"
  loader=$(cat "$rb/loader")
  # The window opens when the load is done (the loader writes the
  # deadline then). A loader gone before that was interrupted mid-load:
  # put back at once.
  while [ -e "$rb/armed" ] && [ ! -e "$rb/now" ]; do
    if [ -e "$rb/deadline" ]; then
      [ "$(date +%s)" -lt "$(cat "$rb/deadline")" ] || break
    elif ! kill -0 "$loader" 2> /dev/null; then
      echo "$(date): the load was interrupted"
      break
    fi
    sleep 1
  done
  if mv "$rb/armed" "$rb/restoring" 2> /dev/null; then
    echo "$(date): not confirmed: putting back the rules saved before the load"
    if restore_state "$rb"; then
      mv "$rb/restoring" "$rb/restored"
      echo "$(date): restored"
      logger -t fwharden "$me: not confirmed: the previous rules were put back" 2> /dev/null || true
    else
      mv "$rb/restoring" "$rb/failed"
      echo "$(date): restoring FAILED: the saved rules are in $rb"
      logger -t fwharden "$me: not confirmed, and putting back the previous rules FAILED: they are in $rb" 2> /dev/null || true
    fi
  elif [ -e "$rb/confirmed" ]; then
    rm -rf "$rb"
  fi
}

# The rollback directory named, or the only one pending. It must be ours
# and private.
pending_dir() {
  d=$1
  if [ -z "$d" ]; then
    for m in "${TMPDIR:-/tmp}"/fwharden-rollback.*/armed; do
      [ -e "$m" ] || continue
      [ -z "$d" ] || fail "several rollbacks are pending ($d and ${m%/armed}): name one, $me --confirm DIR"
      d=${m%/armed}
    done
    [ -n "$d" ] || fail "no rollback is pending under ${TMPDIR:-/tmp}"
  fi
  if [ ! -d "$d" ] || [ ! -O "$d" ] || [ ! -f "$d/name" ] || [ "$(stat -c %a "$d")" != 700 ]; then
    fail "$d is not a private rollback directory of this user"
  fi
  echo "$d"
}

confirm() {
  d=$(pending_dir "$1") || exit 1
  if mv "$d/armed" "$d/confirmed" 2> /dev/null; then
    echo "$me: confirmed: the new rules stay (the restorer of $d stops)"
    exit 0
  fi
  if [ -e "$d/restored" ] || [ -e "$d/restoring" ] || [ -e "$d/failed" ]; then
    fail "too late: the deadline passed and the previous rules were put back (see $d/log); load again to try again"
  fi
  fail "nothing is pending in $d"
}

rollback_now() {
  d=$(pending_dir "$1") || exit 1
  [ -e "$d/armed" ] || fail "nothing is pending in $d"
  : > "$d/now"
  tries=0
  until [ -e "$d/restored" ] || [ -e "$d/failed" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 120 ] || fail "the restorer has not finished after 120 s: see $d/log"
    sleep 1
  done
  [ -e "$d/restored" ] || fail "putting back the previous rules FAILED: see $d/log; they are in $d"
  echo "$me: the previous rules are back"
}

on_exit() {
  status=$?
  if [ "$status" -ne 0 ] && [ -n "${rb:-}" ] && [ -e "$rb/armed" ]; then
    : > "$rb/now"
    echo "$me: loading failed (exit $status): the previous rules are being put back now (see $rb/log)" >&2
  fi
}

timeout=${FWHARDEN_ROLLBACK_TIMEOUT:-60}
rollback=yes
force=no
mode=load
dir=
while [ $# -gt 0 ]; do
  case $1 in
    --timeout)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      timeout=$2
      shift 2
      ;;
    --timeout=*)
      timeout=${1#--timeout=}
      shift
      ;;
    --no-rollback) rollback=no; shift ;;
    --force) force=yes; shift ;;
    --confirm | --rollback | --restorer)
      mode=${1#--}
      shift
      if [ $# -gt 0 ]; then
        dir=$1
        shift
      fi
      ;;
    -h | --help) usage; exit 0 ;;
    *)
      echo "$me: unknown argument $1" >&2
      usage >&2
      exit 2
      ;;
  esac
done
case $timeout in
  '' | *[!0-9]* | 0) echo "$me: --timeout (or FWHARDEN_ROLLBACK_TIMEOUT) takes a whole number of seconds, at least 1" >&2; exit 2 ;;
esac
case $mode in
  confirm) confirm "$dir" ;;
  rollback) rollback_now "$dir"; exit 0 ;;
  restorer) restorer "$dir"; exit 0 ;;
esac
cd "$here"
preflight
check_ssh
rb=
if [ "$rollback" = yes ]; then
  arm
fi
trap on_exit EXIT
load_rules
trap - EXIT
if [ "$rollback" = yes ]; then
  echo $(($(date +%s) + timeout)) > "$rb/deadline.new"
  mv "$rb/deadline.new" "$rb/deadline"
  echo "$me: loaded. The previous rules come back in $timeout s unless you confirm, from a NEW SSH login (that proves new logins get in), as root:"
  echo "  sh $here/$me --confirm $rb"
  echo "$me: to put the previous rules back now:"
  echo "  sh $here/$me --rollback $rb"
else
  echo "$me: loaded, with no rollback timer (--no-rollback)"
fi
"#;

/// The script's text after its header and what-it-changes comment.
pub fn body(script: &Script) -> String {
    let mut out = String::from("set -eu\n");
    out.push_str(script.functions);
    out.push_str(RESTORE_TABLE);
    let _ = write!(
        out,
        "# The table of the lockout check: the input hook for a new TCP connection,\n\
         # from the profile (fwharden emit), read by check_ssh.\n\
         ssh_table() {{\n\
         \x20 cat <<'FWHARDEN_SSH_TABLE'\n{}FWHARDEN_SSH_TABLE\n}}\n",
        script.table
    );
    let existing = if script.existing.is_empty() {
        ":"
    } else {
        script.existing
    };
    let _ = write!(out, "existing_rules() {{\n{existing}\n}}\n");
    out.push_str("# shellcheck disable=SC2016 # an awk program: awk reads its fields\n");
    let _ = writeln!(out, "CHECK_AWK='{}'", lockout::CHECK_AWK);
    out.push_str(NET);
    out
}

/// The comment lines saying what the net does, for a script's header.
pub fn summary(name: &str) -> String {
    format!(
        "# The safety net: before anything changes, a new SSH connection from your\n\
         # address (SSH_CONNECTION, else the connections to sshd) must be accepted by\n\
         # the profile, or {name} exits 4 (--force skips this). The current rules are\n\
         # saved, and put back by a detached process after 60 s (--timeout N,\n\
         # FWHARDEN_ROLLBACK_TIMEOUT) unless {name} --confirm comes first, the\n\
         # command to type is printed. --no-rollback loads with no timer.\n"
    )
}
