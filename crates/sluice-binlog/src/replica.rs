//! Streaming the binlog from a server, as a replica does.
//!
//! The connection speaks just enough of the client/server protocol for replication:
//! handshake and authentication (`mysql_native_password`; `caching_sha2_password` fast path),
//! a few `COM_QUERY` statements to set session variables, `COM_REGISTER_SLAVE`, and
//! `COM_BINLOG_DUMP` with MariaDB's GTID start (`@slave_connect_state`). It is hand-written
//! (packet framing and the dump command) because `mysql_async`'s binlog stream cannot start
//! from a MariaDB GTID position, panics on malformed events, and hides the raw bytes sluice
//! needs for checksum checks; the password scrambles come from `mysql_common`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::gtid::GtidPosition;

/// Everything needed to open a replication stream.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Never printed: [`ReplicaConfig`]'s Debug impl redacts it.
    pub password: String,
    /// The server id sluice registers with; must differ from every server and replica.
    pub server_id: u32,
    /// How often the server sends a heartbeat when it has no events.
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("server_id", &self.server_id)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to the source lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data from the source for {0:?} (heartbeats missing): treating the connection as dead")]
    Timeout(Duration),
    #[error("source refused: error {code} ({state}): {message}")]
    Server { code: u16, state: String, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ReplicaError {
    /// MySQL/MariaDB error 1236 (`ER_MASTER_FATAL_ERROR_READING_BINLOG`): the requested
    /// position is not in the source's binlogs (purged, or never existed).
    pub fn is_position_unavailable(&self) -> bool {
        matches!(self, ReplicaError::Server { code: 1236, .. })
    }

    /// Authentication or privilege errors, which retrying will not fix.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self,
            ReplicaError::Server {
                code: 1045 | 1044 | 1227 | 1142 | 1251,
                ..
            }
        )
    }
}

const MAX_PACKET: usize = 0xff_ffff;

mod capability {
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const LONG_FLAG: u32 = 0x0000_0004;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
}

/// A framed MySQL protocol connection.
struct PacketConn {
    stream: BufReader<TcpStream>,
    seq: u8,
}

impl PacketConn {
    async fn read_packet(&mut self) -> Result<Vec<u8>, ReplicaError> {
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 4];
            self.stream.read_exact(&mut head).await?;
            let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
            self.seq = head[3].wrapping_add(1);
            let start = payload.len();
            payload.resize(start + len, 0);
            self.stream.read_exact(&mut payload[start..]).await?;
            // A payload of exactly 2^24-1 bytes continues in the next packet.
            if len < MAX_PACKET {
                return Ok(payload);
            }
        }
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<(), ReplicaError> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(MAX_PACKET).peekable();
        while let Some(chunk) = chunks.next() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(chunk);
            // A payload ending on a full packet needs an empty packet to mark its end.
            if chunks.peek().is_none() && chunk.len() == MAX_PACKET {
                out.extend_from_slice(&[0, 0, 0, self.seq]);
                self.seq = self.seq.wrapping_add(1);
            }
        }
        if payload.is_empty() {
            out.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        self.stream.get_mut().write_all(&out).await?;
        Ok(())
    }

    async fn command(&mut self, payload: &[u8]) -> Result<Vec<u8>, ReplicaError> {
        self.seq = 0;
        self.write_packet(payload).await?;
        let reply = self.read_packet().await?;
        check_ok(&reply)?;
        Ok(reply)
    }

    async fn query(&mut self, sql: &str) -> Result<(), ReplicaError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(0x03);
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload).await.map(|_| ())
    }
}

/// Turns an ERR packet into an error; anything else passes.
fn check_ok(packet: &[u8]) -> Result<(), ReplicaError> {
    if packet.first() == Some(&0xff) {
        return Err(parse_err_packet(packet));
    }
    Ok(())
}

pub(crate) fn parse_err_packet(packet: &[u8]) -> ReplicaError {
    if packet.len() < 3 {
        return ReplicaError::Protocol("short ERR packet".into());
    }
    let code = u16::from_le_bytes([packet[1], packet[2]]);
    let (state, message) = if packet.get(3) == Some(&b'#') && packet.len() >= 9 {
        (
            String::from_utf8_lossy(&packet[4..9]).into_owned(),
            String::from_utf8_lossy(&packet[9..]).into_owned(),
        )
    } else {
        (
            String::from("HY000"),
            String::from_utf8_lossy(&packet[3..]).into_owned(),
        )
    };
    ReplicaError::Server { code, state, message }
}

/// The server's initial handshake (protocol v10).
#[derive(Debug, PartialEq)]
pub(crate) struct Handshake {
    pub server_version: String,
    pub capabilities: u32,
    pub nonce: Vec<u8>,
    pub auth_plugin: String,
}

pub(crate) fn parse_handshake(p: &[u8]) -> Result<Handshake, ReplicaError> {
    let bad = |what: &str| ReplicaError::Protocol(format!("malformed handshake: {what}"));
    if p.first() == Some(&0xff) {
        return Err(parse_err_packet(p));
    }
    if p.first() != Some(&10) {
        return Err(bad("protocol version is not 10"));
    }
    let rest = &p[1..];
    let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| bad("server version"))?;
    let server_version = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let rest = &rest[nul + 1..];
    if rest.len() < 4 + 8 + 1 + 2 {
        return Err(bad("too short"));
    }
    let mut nonce = rest[4..12].to_vec();
    let rest = &rest[13..];
    let cap_low = u32::from(u16::from_le_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() < 1 + 2 + 2 + 1 + 10 {
        return Ok(Handshake {
            server_version,
            capabilities: cap_low,
            nonce,
            auth_plugin: "mysql_native_password".into(),
        });
    }
    let cap_high = u32::from(u16::from_le_bytes([rest[3], rest[4]]));
    let capabilities = cap_low | cap_high << 16;
    let auth_len = usize::from(rest[5]);
    let rest = &rest[16..];
    let part2_len = auth_len.saturating_sub(8).max(13);
    if rest.len() < part2_len {
        return Err(bad("auth data"));
    }
    // The second part is NUL-terminated; the nonce is 20 bytes in total.
    nonce.extend_from_slice(&rest[..part2_len - 1]);
    let rest = &rest[part2_len..];
    let auth_plugin = if capabilities & capability::PLUGIN_AUTH != 0 {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    } else {
        "mysql_native_password".into()
    };
    Ok(Handshake {
        server_version,
        capabilities,
        nonce,
        auth_plugin,
    })
}

/// The auth response for `plugin`; `None` when sluice does not implement the plugin.
pub(crate) fn auth_response(plugin: &str, nonce: &[u8], password: &str) -> Option<Vec<u8>> {
    if password.is_empty() {
        return Some(Vec::new());
    }
    match plugin {
        "mysql_native_password" => {
            mysql_common::scramble::scramble_native(nonce, password.as_bytes()).map(|s| s.to_vec())
        }
        "caching_sha2_password" => {
            mysql_common::scramble::scramble_sha256(nonce, password.as_bytes()).map(|s| s.to_vec())
        }
        _ => None,
    }
}

pub(crate) fn handshake_response(user: &str, auth: &[u8], plugin: &str) -> Vec<u8> {
    use capability::*;
    let caps = LONG_PASSWORD
        | LONG_FLAG
        | PROTOCOL_41
        | TRANSACTIONS
        | SECURE_CONNECTION
        | PLUGIN_AUTH
        | PLUGIN_AUTH_LENENC_DATA;
    let mut out = Vec::with_capacity(64 + user.len() + auth.len());
    out.extend_from_slice(&caps.to_le_bytes());
    out.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    out.push(45); // utf8mb4_general_ci
    out.extend_from_slice(&[0u8; 23]);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.push(auth.len() as u8);
    out.extend_from_slice(auth);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out
}

/// An open replication connection delivering raw events.
pub struct BinlogStream {
    conn: PacketConn,
    idle_timeout: Duration,
    /// The server's version, without the `5.5.5-` prefix MariaDB sends for old clients.
    pub server_version: String,
}

impl std::fmt::Debug for BinlogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogStream")
            .field("server_version", &self.server_version)
            .finish()
    }
}

impl BinlogStream {
    /// Connects, authenticates, registers as a replica and asks for the binlog from `start`
    /// (a MariaDB GTID position; empty means the oldest binlog the server has).
    pub async fn connect(config: &ReplicaConfig, start: &GtidPosition) -> Result<BinlogStream, ReplicaError> {
        let addr = format!("{}:{}", config.host, config.port);
        let tcp = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| ReplicaError::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| ReplicaError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let mut conn = PacketConn {
            stream: BufReader::with_capacity(256 * 1024, tcp),
            seq: 0,
        };
        let greeting = tokio::time::timeout(config.connect_timeout, conn.read_packet())
            .await
            .map_err(|_| ReplicaError::Timeout(config.connect_timeout))??;
        let hs = parse_handshake(&greeting)?;
        let mut plugin = hs.auth_plugin.clone();
        let auth = auth_response(&plugin, &hs.nonce, &config.password)
            .ok_or_else(|| ReplicaError::Protocol(format!("authentication plugin {plugin} is not supported")))?;
        conn.write_packet(&handshake_response(&config.user, &auth, &plugin))
            .await?;
        loop {
            let reply = conn.read_packet().await?;
            match reply.first() {
                Some(0x00) => break,
                Some(0xff) => return Err(parse_err_packet(&reply)),
                // Auth switch request: plugin name, NUL, new nonce.
                Some(0xfe) => {
                    let body = &reply[1..];
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    plugin = String::from_utf8_lossy(&body[..end]).into_owned();
                    let mut nonce = body.get(end + 1..).unwrap_or(&[]).to_vec();
                    if nonce.last() == Some(&0) {
                        nonce.pop();
                    }
                    let auth = auth_response(&plugin, &nonce, &config.password)
                        .ok_or_else(|| ReplicaError::Protocol(format!("authentication plugin {plugin} is not supported")))?;
                    conn.write_packet(&auth).await?;
                }
                // caching_sha2_password: 0x01 0x03 is "fast auth succeeded", 0x01 0x04 asks for
                // the full exchange, which needs TLS or the server's RSA key.
                Some(0x01) if reply.get(1) == Some(&0x03) => {}
                Some(0x01) => {
                    return Err(ReplicaError::Protocol(
                        "caching_sha2_password full authentication needs TLS, which this connection does not use yet; connect once with the mysql client to prime the server's cache, or use mysql_native_password for the replication user".into(),
                    ))
                }
                _ => return Err(ReplicaError::Protocol("unexpected authentication reply".into())),
            }
        }

        let heartbeat_ns = config.heartbeat.as_nanos().min(u128::from(u32::MAX) * 1_000_000_000);
        conn.query("SET @master_binlog_checksum = @@global.binlog_checksum")
            .await?;
        conn.query(&format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await?;
        // MARIA_SLAVE_CAPABILITY_GTID: the server sends GTID events and starts at a GTID.
        conn.query("SET @mariadb_slave_capability = 4").await?;
        // Positions are digits, dashes and commas only (GtidPosition's Display), so the
        // literal cannot carry anything else.
        conn.query(&format!("SET @slave_connect_state = '{start}'")).await?;
        conn.query("SET @slave_gtid_strict_mode = 1").await?;

        let mut register = vec![0x15];
        register.extend_from_slice(&config.server_id.to_le_bytes());
        register.push(0); // hostname
        register.push(0); // user
        register.push(0); // password
        register.extend_from_slice(&0u16.to_le_bytes());
        register.extend_from_slice(&0u32.to_le_bytes()); // replication rank
        register.extend_from_slice(&0u32.to_le_bytes()); // master id
        conn.command(&register).await?;

        let mut dump = vec![0x12];
        dump.extend_from_slice(&4u32.to_le_bytes());
        // BINLOG_SEND_ANNOTATE_ROWS_EVENT
        dump.extend_from_slice(&2u16.to_le_bytes());
        dump.extend_from_slice(&config.server_id.to_le_bytes());
        conn.seq = 0;
        conn.write_packet(&dump).await?;

        Ok(BinlogStream {
            conn,
            idle_timeout: config.heartbeat * 3 + Duration::from_secs(2),
            server_version: hs
                .server_version
                .strip_prefix("5.5.5-")
                .unwrap_or(&hs.server_version)
                .to_owned(),
        })
    }

    /// The next raw event (header, body and checksum). Errors if the server sends nothing,
    /// not even a heartbeat, for three heartbeat periods.
    pub async fn next_event(&mut self) -> Result<Vec<u8>, ReplicaError> {
        let packet = tokio::time::timeout(self.idle_timeout, self.conn.read_packet())
            .await
            .map_err(|_| ReplicaError::Timeout(self.idle_timeout))??;
        match packet.first() {
            Some(0x00) => {
                let mut event = packet;
                event.remove(0);
                Ok(event)
            }
            Some(0xff) => Err(parse_err_packet(&packet)),
            Some(0xfe) if packet.len() < 9 => Err(ReplicaError::Protocol("the source ended the binlog stream".into())),
            _ => Err(ReplicaError::Protocol("unexpected packet in binlog stream".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mariadb_handshake() {
        // Shape of a MariaDB 10.11 greeting: version 10, version string, thread id, nonce part
        // one, filler, capabilities, collation, status, capabilities (high), auth data length,
        // reserved (MariaDB puts extended caps in the last 4), nonce part two, plugin name.
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&0xf7feu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81bfu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0u8; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        let hs = parse_handshake(&p).unwrap();
        assert_eq!(hs.server_version, "5.5.5-10.11.19-MariaDB");
        assert_eq!(hs.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(hs.auth_plugin, "mysql_native_password");
        assert!(hs.capabilities & capability::PLUGIN_AUTH != 0);
    }

    #[test]
    fn err_packets_keep_code_and_message() {
        let mut p = vec![0xff];
        p.extend_from_slice(&1236u16.to_le_bytes());
        p.extend_from_slice(b"#HY000Could not find GTID state");
        let e = parse_err_packet(&p);
        assert!(e.is_position_unavailable());
        assert!(e.to_string().contains("Could not find GTID state"));
    }

    #[test]
    fn debug_redacts_the_password() {
        let cfg = ReplicaConfig {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: "hunter2".into(),
            server_id: 1,
            heartbeat: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
