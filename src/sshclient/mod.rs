//! Who the operator is: the SSH client this process runs for, which the
//! lockout guard must keep able to log in, the escape hatch lets back in,
//! and `ban` must not ban.
//!
//! sshd tells its session through `SSH_CONNECTION` (and the older
//! `SSH_CLIENT`), but the environment is not reliable: Debian's sudo
//! resets it (`env_reset`; `sudo -V` lists what it keeps, and neither is
//! there), and a variable can be set to anything. So when neither variable
//! reads as a connection, the client is taken from the kernel instead
//! ([`connections`]): the established TCP connections to the local sshd,
//! preferring the one held by an sshd process that is an ancestor of this
//! one (sudo and the `sshd: user@pts/0` session process sit in between).
//! How the client was found is always said, so a person can check it.

mod connections;

use std::net::IpAddr;

use serde::Serialize;

/// The operator's SSH connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshClient {
    pub client: IpAddr,
    pub server_port: u16,
    /// The local address the client connected to (not in SSH_CLIENT).
    pub server: Option<IpAddr>,
}

/// How the operator's client was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum How {
    /// From `SSH_CONNECTION` or `SSH_CLIENT`.
    Environment { variable: String },
    /// The connection held by sshd process `pid`, an ancestor of this one.
    SshdAncestor { pid: u32 },
    /// No sshd process is an ancestor of this one, and there is one
    /// established connection to the local sshd: that one.
    OnlyConnection { pid: u32 },
    /// Several established connections to the local sshd, none held by an
    /// ancestor of this process: every one of them is guarded.
    Ambiguous,
    /// No variable, no established connection to a local sshd: not over
    /// SSH (a console, automation).
    NotFound,
}

/// The operator's SSH client(s), how they were found, and what the
/// environment said when it did not give them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// One client; several when [`How::Ambiguous`]; none when
    /// [`How::NotFound`].
    pub clients: Vec<SshClient>,
    #[serde(flatten)]
    pub how: How,
    /// Variables that are set but unreadable, and what the kernel could
    /// not tell.
    pub notes: Vec<String>,
}

impl Operator {
    /// The one client the escape hatch can let back in.
    pub fn single(&self) -> Option<&SshClient> {
        match &self.clients[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Why no escape hatch is armed for this operator.
    pub fn why_no_hatch(&self) -> String {
        match self.how {
            How::Ambiguous => format!(
                "{}; the hatch lets one address back in, and none of them is known to be yours",
                self.describe()
            ),
            _ => format!(
                "not applied over SSH ({}), so there is no operator address to let back in",
                self.describe()
            ),
        }
    }

    /// Whether `addr` is (one of) the operator's client address(es).
    pub fn is_client(&self, addr: IpAddr) -> bool {
        self.clients.iter().any(|c| c.client == addr)
    }

    /// One line for people: who, and how fwharden knows.
    pub fn describe(&self) -> String {
        let list = |cs: &[SshClient]| {
            cs.iter()
                .map(|c| format!("{} (to port {})", c.client, c.server_port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = match &self.how {
            How::Environment { variable } => {
                format!("SSH client {}, from {variable}", list(&self.clients))
            }
            How::SshdAncestor { pid } => format!(
                "SSH client {}, found from its established connection to sshd (process {pid}, an ancestor of this process)",
                list(&self.clients)
            ),
            How::OnlyConnection { pid } => format!(
                "SSH client {}, found as the only established connection to sshd (process {pid}; no sshd process is an ancestor of this one)",
                list(&self.clients)
            ),
            How::Ambiguous => format!(
                "SSH clients {}: several established connections to sshd, none held by an ancestor of this process, so all of them are guarded",
                list(&self.clients)
            ),
            How::NotFound => {
                "no SSH client: SSH_CONNECTION and SSH_CLIENT give none and there is no established connection to a local sshd".to_string()
            }
        };
        for n in &self.notes {
            out.push_str("; ");
            out.push_str(n);
        }
        out
    }
}

/// What one variable says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    Unset,
    /// Set, but not in the form sshd writes: the value, as it reads.
    Unreadable(String),
    Read(SshClient),
}

/// `SSH_CONNECTION="client cport server sport"`.
pub fn read_connection(value: Option<&str>) -> Variable {
    read(value, |f| match f {
        [client, cport, server, sport] => {
            cport.parse::<u16>().ok()?;
            Some(SshClient {
                client: unmap(client.parse().ok()?),
                server: Some(unmap(server.parse().ok()?)),
                server_port: sport.parse().ok()?,
            })
        }
        _ => None,
    })
}

/// `SSH_CLIENT="client cport sport"`.
pub fn read_client(value: Option<&str>) -> Variable {
    read(value, |f| match f {
        [client, cport, sport] => {
            cport.parse::<u16>().ok()?;
            Some(SshClient {
                client: unmap(client.parse().ok()?),
                server: None,
                server_port: sport.parse().ok()?,
            })
        }
        _ => None,
    })
}

fn read(value: Option<&str>, parse: impl Fn(&[&str]) -> Option<SshClient>) -> Variable {
    let Some(value) = value else {
        return Variable::Unset;
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    match parse(&fields) {
        Some(c) if c.server_port != 0 => Variable::Read(c),
        _ => Variable::Unreadable(value.to_string()),
    }
}

/// The operator from the two variables' values; `Err` carries the notes
/// (unreadable variables) when neither gives a client.
pub fn from_variables(
    connection: Option<&str>,
    client: Option<&str>,
) -> Result<Operator, Vec<String>> {
    let mut notes = Vec::new();
    for (name, reading) in [
        ("SSH_CONNECTION", read_connection(connection)),
        ("SSH_CLIENT", read_client(client)),
    ] {
        match reading {
            Variable::Read(c) => {
                return Ok(Operator {
                    clients: vec![c],
                    how: How::Environment {
                        variable: name.into(),
                    },
                    notes,
                })
            }
            Variable::Unreadable(v) => notes.push(format!(
                "{name} is set but unreadable ({v:?}): not the form sshd writes"
            )),
            Variable::Unset => {}
        }
    }
    Err(notes)
}

/// The operator of this process: from the environment when it reads as a
/// connection, else from the kernel's connections to sshd.
pub fn find() -> Operator {
    let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let (connection, client) = (var("SSH_CONNECTION"), var("SSH_CLIENT"));
    match from_variables(connection.as_deref(), client.as_deref()) {
        Ok(op) => op,
        Err(notes) => {
            let mut op = connections::find();
            let mut all = notes;
            all.append(&mut op.notes);
            op.notes = all;
            op
        }
    }
}

/// sshd reports IPv4 clients of a dual-stack socket as ::ffff:a.b.c.d; the
/// kernel's input hook sees them as IPv4, and so must a ban.
pub fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(v: Variable) -> SshClient {
        match v {
            Variable::Read(c) => c,
            other => panic!("not read: {other:?}"),
        }
    }

    #[test]
    fn reads_both_variables_and_unmaps_ipv4() {
        let c = read_ok(read_connection(Some(
            "::ffff:192.0.2.7 50000 10.1.1.1 2222",
        )));
        assert_eq!(c.client, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.server_port, 2222);
        let c = read_ok(read_client(Some("2001:db8::5 50000 22")));
        assert_eq!((c.server, c.server_port), (None, 22));
    }

    #[test]
    fn set_but_unreadable_is_not_unset() {
        for v in [
            "garbage",
            "",
            "203.0.113.99 50000",
            "1.2.3.4 x 5.6.7.8 22",
            "1.2.3.4 5 6.7.8.9 0",
        ] {
            assert_eq!(
                read_connection(Some(v)),
                Variable::Unreadable(v.into()),
                "{v:?}"
            );
        }
        assert_eq!(read_connection(None), Variable::Unset);
        let notes = from_variables(Some("203.0.113.99 50000"), None).unwrap_err();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("SSH_CONNECTION is set but unreadable (\"203.0.113.99 50000\")"),
            "{notes:?}"
        );
        assert!(from_variables(None, None).unwrap_err().is_empty());
    }

    #[test]
    fn an_unreadable_connection_falls_back_on_a_readable_client_and_says_so() {
        let op = from_variables(Some("garbage"), Some("192.0.2.7 5 22")).unwrap();
        assert_eq!(
            op.how,
            How::Environment {
                variable: "SSH_CLIENT".into()
            }
        );
        assert!(op
            .describe()
            .contains("SSH_CONNECTION is set but unreadable (\"garbage\")"));
        assert!(op.is_client("192.0.2.7".parse().unwrap()));
    }
}
