//! Streaming the binlog from a server, as a replica does.
//!
//! The connection speaks just enough of the client/server protocol for replication:
//! handshake and authentication (`mysql_native_password`; `caching_sha2_password` fast and
//! full authentication), a few `COM_QUERY` statements to set session variables,
//! `COM_REGISTER_SLAVE`, and either `COM_BINLOG_DUMP` with MariaDB's GTID start
//! (`@slave_connect_state`) or MySQL's `COM_BINLOG_DUMP_GTID` with a GTID set, chosen by the
//! server version in the handshake ([`SourceFlavor`]). It is hand-written
//! (packet framing and the dump command) because `mysql_async`'s binlog stream cannot start
//! from a MariaDB GTID position, panics on malformed events, and hides the raw bytes sluice
//! needs for checksum checks; the password scrambles come from `mysql_common`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::gtid::GtidPosition;
use crate::tls::{TlsError, TlsSettings};

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
    /// TLS for the connection; never a plaintext fallback when enabled.
    pub tls: TlsSettings,
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
            .field("tls", &self.tls.mode)
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
    #[error("TLS to the source {addr}: {message}")]
    Tls { addr: String, message: String },
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
    pub const SSL: u32 = 0x0000_0800;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
}

/// The transport under the packets: plain TCP, or TLS over it.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Bytes read ahead from the socket (binlog events arrive in bursts).
const READ_BUFFER: usize = 256 * 1024;

/// A framed MySQL protocol connection.
struct PacketConn {
    stream: BufReader<Box<dyn Transport>>,
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

/// What the client does after an authentication reply from the server.
#[derive(Debug, PartialEq)]
pub(crate) enum AuthStep {
    /// Send this packet (same sequence numbering as the exchange so far).
    Send(Vec<u8>),
    /// Nothing to send; the server's next packet follows.
    Wait,
    /// Authenticated (the server sent OK).
    Done,
}

/// The client side of authentication after the handshake response: auth switches,
/// `caching_sha2_password`'s fast path and its full authentication over a connection without
/// TLS (MySQL 8 docs, "caching_sha2_password information" in the Client/Server protocol's
/// authentication methods): the server answers the scramble with AuthMoreData `01 03` (fast
/// authentication succeeded, OK follows) or `01 04` (perform full authentication); without TLS
/// the client then asks for the server's RSA public key (`02`), gets it as AuthMoreData
/// (`01` + PEM), and sends the NUL-terminated password XORed with the nonce, RSA-encrypted with
/// OAEP padding.
pub(crate) struct Authenticator<'p> {
    plugin: String,
    nonce: Vec<u8>,
    password: &'p str,
    awaiting_public_key: bool,
    /// Over TLS, full authentication sends the password itself (the channel is encrypted).
    tls: bool,
}

impl<'p> Authenticator<'p> {
    pub(crate) fn new(plugin: &str, nonce: &[u8], password: &'p str, tls: bool) -> Self {
        Authenticator {
            plugin: plugin.to_owned(),
            nonce: nonce.to_vec(),
            password,
            awaiting_public_key: false,
            tls,
        }
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The auth data of the handshake response (or of the reply to an auth switch).
    pub(crate) fn initial_response(&self) -> Result<Vec<u8>, ReplicaError> {
        auth_response(&self.plugin, &self.nonce, self.password)
            .ok_or_else(|| ReplicaError::Protocol(format!("authentication plugin {} is not supported", self.plugin)))
    }

    pub(crate) fn on_reply(&mut self, reply: &[u8]) -> Result<AuthStep, ReplicaError> {
        match reply.first() {
            Some(0x00) => Ok(AuthStep::Done),
            Some(0xff) => Err(parse_err_packet(reply)),
            // Auth switch request: plugin name, NUL, new nonce (NUL-terminated).
            Some(0xfe) => {
                let body = &reply[1..];
                let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                self.plugin = String::from_utf8_lossy(&body[..end]).into_owned();
                let mut nonce = body.get(end + 1..).unwrap_or(&[]).to_vec();
                if nonce.last() == Some(&0) {
                    nonce.pop();
                }
                self.nonce = nonce;
                self.awaiting_public_key = false;
                Ok(AuthStep::Send(self.initial_response()?))
            }
            Some(0x01) if self.plugin == "caching_sha2_password" => {
                if self.awaiting_public_key {
                    self.awaiting_public_key = false;
                    return Ok(AuthStep::Send(self.encrypted_password(&reply[1..])?));
                }
                match reply.get(1) {
                    Some(0x03) => Ok(AuthStep::Wait),
                    Some(0x04) if self.tls => {
                        let mut password = self.password.as_bytes().to_vec();
                        password.push(0);
                        Ok(AuthStep::Send(password))
                    }
                    Some(0x04) => {
                        self.awaiting_public_key = true;
                        Ok(AuthStep::Send(vec![0x02]))
                    }
                    _ => Err(ReplicaError::Protocol("unexpected caching_sha2_password reply".into())),
                }
            }
            _ => Err(ReplicaError::Protocol("unexpected authentication reply".into())),
        }
    }

    /// `caching_sha2_password` full authentication without TLS: (password + NUL) XOR nonce
    /// (repeated), encrypted with the server's RSA key (OAEP), by `mysql_common`.
    fn encrypted_password(&self, pem: &[u8]) -> Result<Vec<u8>, ReplicaError> {
        if self.nonce.is_empty() {
            return Err(ReplicaError::Protocol("caching_sha2_password: empty nonce".into()));
        }
        let mut plain = self.password.as_bytes().to_vec();
        plain.push(0);
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= self.nonce[i % self.nonce.len()];
        }
        if !pem.starts_with(b"-----BEGIN ") {
            return Err(ReplicaError::Protocol(
                "caching_sha2_password: the server's public key is not PEM".into(),
            ));
        }
        // mysql_common's PEM/DER parser panics on malformed keys (documented); a bad key from
        // the server must be an error, not a crash.
        std::panic::catch_unwind(|| mysql_common::crypto::encrypt(&plain, pem))
            .map_err(|_| ReplicaError::Protocol("caching_sha2_password: cannot use the server's RSA public key".into()))
    }
}

/// `COM_BINLOG_DUMP_GTID` for a MySQL source (MySQL docs, Client/Server protocol, Replication
/// Protocol, "COM_BINLOG_DUMP_GTID"): command `0x1e`, flags (2 bytes), server id (4), binlog
/// file name length (4) and name (empty: start from the GTID set), position (8, 4 = after the
/// magic), then, with `BINLOG_THROUGH_GTID` (0x04) in the flags, the length (4) and the bytes
/// of the GTID set the replica has, encoded as `Gtid_set::encode` does (the same layout as a
/// PREVIOUS_GTIDS event body). The server sends every transaction not in the set.
///
/// [`BinlogStream::connect_from`] sends it for a MySQL source.
pub fn com_binlog_dump_gtid(server_id: u32, executed: &crate::gtid::MysqlGtidSet) -> Vec<u8> {
    const BINLOG_THROUGH_GTID: u16 = 0x04;
    let set = crate::mysql_gtid::encode_gtid_set(executed);
    let mut out = Vec::with_capacity(27 + set.len());
    out.push(0x1e);
    out.extend_from_slice(&BINLOG_THROUGH_GTID.to_le_bytes());
    out.extend_from_slice(&server_id.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&4u64.to_le_bytes());
    out.extend_from_slice(&(set.len() as u32).to_le_bytes());
    out.extend_from_slice(&set);
    out
}

/// The first 32 bytes of a handshake response: capabilities, maximum packet size, character
/// set, and 23 reserved bytes. Alone (with `SSL` among the capabilities) it is the SSL
/// request that precedes the TLS handshake.
fn client_capabilities(extra: u32) -> Vec<u8> {
    use capability::*;
    let caps = extra
        | LONG_PASSWORD
        | LONG_FLAG
        | PROTOCOL_41
        | TRANSACTIONS
        | SECURE_CONNECTION
        | PLUGIN_AUTH
        | PLUGIN_AUTH_LENENC_DATA;
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&caps.to_le_bytes());
    out.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    out.push(45); // utf8mb4_general_ci
    out.extend_from_slice(&[0u8; 23]);
    out
}

pub(crate) fn handshake_response(user: &str, auth: &[u8], plugin: &str, tls: bool) -> Vec<u8> {
    let mut out = client_capabilities(if tls { capability::SSL } else { 0 });
    out.reserve(user.len() + auth.len() + plugin.len() + 3);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.push(auth.len() as u8);
    out.extend_from_slice(auth);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out
}

/// Sends the SSL request and runs the TLS handshake; the rest of the exchange (handshake
/// response and authentication) goes over TLS. A server that does not offer TLS is an error,
/// never a plaintext fallback.
async fn start_tls(
    mut conn: PacketConn,
    config: &ReplicaConfig,
    hs: &Handshake,
    addr: &str,
) -> Result<PacketConn, ReplicaError> {
    let tls_err = |message: String| ReplicaError::Tls {
        addr: addr.to_owned(),
        message,
    };
    if hs.capabilities & capability::SSL == 0 {
        return Err(tls_err(format!(
            "tls_mode is \"{}\" but the server does not offer TLS; configure TLS on the server (ssl_cert, ssl_key) \
             or set tls_mode = \"disabled\"",
            config.tls.mode
        )));
    }
    let client = crate::tls::client_config(&config.tls).map_err(|e: TlsError| tls_err(e.to_string()))?;
    let name = crate::tls::server_name(&config.host).map_err(|e| tls_err(e.to_string()))?;
    conn.write_packet(&client_capabilities(capability::SSL)).await?;
    // Nothing was read past the greeting: the server waits for the TLS handshake.
    let tcp = conn.stream.into_inner();
    let stream = tokio::time::timeout(
        config.connect_timeout,
        tokio_rustls::TlsConnector::from(client).connect(name, tcp),
    )
    .await
    .map_err(|_| tls_err("the TLS handshake timed out".into()))?
    .map_err(|e| tls_err(format!("the TLS handshake failed: {e}")))?;
    Ok(PacketConn {
        stream: BufReader::with_capacity(READ_BUFFER, Box::new(stream)),
        seq: conn.seq,
    })
}

/// An open replication connection delivering raw events.
pub struct BinlogStream {
    conn: PacketConn,
    idle_timeout: Duration,
    /// MariaDB or MySQL, from the handshake's server version.
    pub flavor: SourceFlavor,
    /// The server's version, without the `5.5.5-` prefix MariaDB sends for old clients.
    pub server_version: String,
}

impl std::fmt::Debug for BinlogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogStream")
            .field("flavor", &self.flavor)
            .field("server_version", &self.server_version)
            .finish()
    }
}

/// Which server family a source is, from its handshake: the two speak different GTID
/// dialects (MariaDB `domain-server-seq` positions, MySQL `uuid:intervals` sets) and start a
/// dump differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFlavor {
    MariaDb,
    Mysql,
}

impl SourceFlavor {
    /// MariaDB names itself in its version string (`10.11.19-MariaDB`, sent to old clients as
    /// `5.5.5-10.11.19-MariaDB`); MySQL 5.6 to 9.x never does.
    pub fn from_server_version(version: &str) -> SourceFlavor {
        if version.contains("MariaDB") {
            SourceFlavor::MariaDb
        } else {
            SourceFlavor::Mysql
        }
    }
}

impl std::fmt::Display for SourceFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceFlavor::MariaDb => "MariaDB",
            SourceFlavor::Mysql => "MySQL",
        })
    }
}

/// Where a dump starts: the GTIDs the replica already has, in the source's dialect.
#[derive(Debug, Clone, Copy)]
pub enum DumpStart<'a> {
    /// A MariaDB GTID position (one GTID per domain; empty: the oldest binlog).
    MariaDb(&'a GtidPosition),
    /// A MySQL GTID set of every transaction the replica has (tagged GTIDs included; empty:
    /// every transaction in the source's binlogs).
    Mysql(&'a crate::gtid::MysqlGtidSet),
}

impl DumpStart<'_> {
    fn flavor(&self) -> SourceFlavor {
        match self {
            DumpStart::MariaDb(_) => SourceFlavor::MariaDb,
            DumpStart::Mysql(_) => SourceFlavor::Mysql,
        }
    }
}

impl BinlogStream {
    /// Connects, authenticates, registers as a replica and asks for the binlog from `start`
    /// (a MariaDB GTID position; empty means the oldest binlog the server has).
    pub async fn connect(config: &ReplicaConfig, start: &GtidPosition) -> Result<BinlogStream, ReplicaError> {
        Self::connect_from(config, DumpStart::MariaDb(start)).await
    }

    /// Connects, authenticates, registers as a replica and starts the dump the source's
    /// flavor understands: MariaDB's `COM_BINLOG_DUMP` after `@slave_connect_state`, or
    /// MySQL's `COM_BINLOG_DUMP_GTID` with the set the replica has. A start in the other
    /// flavor's dialect is refused before anything is asked of the server.
    pub async fn connect_from(config: &ReplicaConfig, start: DumpStart<'_>) -> Result<BinlogStream, ReplicaError> {
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
            stream: BufReader::with_capacity(READ_BUFFER, Box::new(tcp) as Box<dyn Transport>),
            seq: 0,
        };
        let greeting = tokio::time::timeout(config.connect_timeout, conn.read_packet())
            .await
            .map_err(|_| ReplicaError::Timeout(config.connect_timeout))??;
        let hs = parse_handshake(&greeting)?;
        let tls = config.tls.enabled();
        if tls {
            conn = start_tls(conn, config, &hs, &addr).await?;
        }
        let mut auth = Authenticator::new(&hs.auth_plugin, &hs.nonce, &config.password, tls);
        let first = auth.initial_response()?;
        conn.write_packet(&handshake_response(&config.user, &first, auth.plugin(), tls))
            .await?;
        loop {
            let reply = conn.read_packet().await?;
            let step = auth.on_reply(&reply).map_err(|e| match e {
                // Without TLS, a user whose account requires it is refused like a bad password.
                ReplicaError::Server {
                    code: 1045,
                    state,
                    message,
                } if !tls && hs.capabilities & capability::SSL != 0 => ReplicaError::Server {
                    code: 1045,
                    state,
                    message: format!(
                        "{message} (the connection is not encrypted: tls_mode is \"disabled\"; if the account \
                             requires TLS, REQUIRE SSL, set tls_mode)"
                    ),
                },
                other => other,
            })?;
            match step {
                AuthStep::Send(packet) => conn.write_packet(&packet).await?,
                AuthStep::Wait => {}
                AuthStep::Done => break,
            }
        }

        let flavor = SourceFlavor::from_server_version(&hs.server_version);
        if flavor != start.flavor() {
            return Err(ReplicaError::Protocol(format!(
                "the source {addr} is {flavor} ({}) but the start position is a {} GTID {}; a checkpoint \
                 cannot move between MariaDB and MySQL: copy again from this source (a new target) or set \
                 [source] to the server the checkpoint came from",
                hs.server_version,
                start.flavor(),
                if start.flavor() == SourceFlavor::Mysql {
                    "set"
                } else {
                    "position"
                },
            )));
        }

        let heartbeat_ns = config.heartbeat.as_nanos().min(u128::from(u32::MAX) * 1_000_000_000);
        match start {
            DumpStart::MariaDb(position) => {
                conn.query("SET @master_binlog_checksum = @@global.binlog_checksum")
                    .await?;
                conn.query(&format!("SET @master_heartbeat_period = {heartbeat_ns}"))
                    .await?;
                // MARIA_SLAVE_CAPABILITY_GTID: the server sends GTID events and starts at a GTID.
                conn.query("SET @mariadb_slave_capability = 4").await?;
                // Positions are digits, dashes and commas only (GtidPosition's Display), so the
                // literal cannot carry anything else.
                conn.query(&format!("SET @slave_connect_state = '{position}'")).await?;
                conn.query("SET @slave_gtid_strict_mode = 1").await?;
            }
            DumpStart::Mysql(_) => {
                // As MySQL's own replica does (rpl_replica.cc, get_master_version_and_clock):
                // both names of each variable, because 8.0.26+ reads `source_*` and earlier
                // servers `master_*`; setting the other is a harmless user variable. Without the
                // checksum variable a source whose binlog has checksums refuses the dump (1236,
                // "Slave can not handle replication events with the checksum ..."); without the
                // heartbeat period it sends none and an idle stream looks dead.
                conn.query(
                    "SET @source_binlog_checksum = @@global.binlog_checksum, \
                     @master_binlog_checksum = @@global.binlog_checksum",
                )
                .await?;
                conn.query(&format!(
                    "SET @source_heartbeat_period = {heartbeat_ns}, @master_heartbeat_period = {heartbeat_ns}"
                ))
                .await?;
            }
        }

        let mut register = vec![0x15];
        register.extend_from_slice(&config.server_id.to_le_bytes());
        register.push(0); // hostname
        register.push(0); // user
        register.push(0); // password
        register.extend_from_slice(&0u16.to_le_bytes());
        register.extend_from_slice(&0u32.to_le_bytes()); // replication rank
        register.extend_from_slice(&0u32.to_le_bytes()); // master id
        conn.command(&register).await?;

        let dump = match start {
            DumpStart::MariaDb(_) => {
                let mut dump = vec![0x12];
                dump.extend_from_slice(&4u32.to_le_bytes());
                // BINLOG_SEND_ANNOTATE_ROWS_EVENT
                dump.extend_from_slice(&2u16.to_le_bytes());
                dump.extend_from_slice(&config.server_id.to_le_bytes());
                dump
            }
            DumpStart::Mysql(executed) => com_binlog_dump_gtid(config.server_id, executed),
        };
        conn.seq = 0;
        conn.write_packet(&dump).await?;

        Ok(BinlogStream {
            conn,
            flavor,
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

    const NONCE: &[u8; 20] = b"0123456789abcdefghij";

    /// MySQL docs, "caching_sha2_password information" (fast authentication): the client sends
    /// XOR(SHA256(password), SHA256(SHA256(SHA256(password)) || nonce)), 32 bytes. Computed
    /// here from that formula with `sha2`, independently of the `mysql_common` code sluice uses.
    #[test]
    fn caching_sha2_scramble_is_the_documented_formula() {
        use sha2::{Digest, Sha256};
        let password = "s3cret-pw";
        let stage1 = Sha256::digest(password.as_bytes());
        let stage2 = Sha256::digest(stage1);
        let stage3 = Sha256::digest([&stage2[..], &NONCE[..]].concat());
        let expected: Vec<u8> = stage1.iter().zip(stage3.iter()).map(|(a, b)| a ^ b).collect();
        let auth = Authenticator::new("caching_sha2_password", NONCE, password, false);
        assert_eq!(auth.initial_response().unwrap(), expected);
        // An empty password sends empty auth data.
        assert!(Authenticator::new("caching_sha2_password", NONCE, "", false)
            .initial_response()
            .unwrap()
            .is_empty());
    }

    /// Fast path: AuthMoreData 01 03 ("fast_auth_success"), then OK.
    #[test]
    fn caching_sha2_fast_path_waits_for_ok() {
        let mut auth = Authenticator::new("caching_sha2_password", NONCE, "pw", false);
        assert_eq!(auth.on_reply(&[0x01, 0x03]).unwrap(), AuthStep::Wait);
        assert_eq!(
            auth.on_reply(&[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]).unwrap(),
            AuthStep::Done
        );
    }

    /// Full authentication without TLS (same doc section): AuthMoreData 01 04 → the client
    /// asks for the public key with 02 → AuthMoreData 01 + PEM → the client sends
    /// RSA-OAEP(password + NUL XOR nonce). The test's server key is made by `openssl`, which
    /// also decrypts what the client sent.
    #[test]
    fn caching_sha2_full_authentication_over_tls_sends_the_password() {
        let mut auth = Authenticator::new("caching_sha2_password", NONCE, "s3cret-pw", true);
        assert_eq!(
            auth.on_reply(&[0x01, 0x04]).unwrap(),
            AuthStep::Send(b"s3cret-pw\0".to_vec())
        );
        assert_eq!(auth.on_reply(&[0x00, 0, 0, 2, 0, 0, 0]).unwrap(), AuthStep::Done);
    }

    #[test]
    fn the_ssl_request_is_the_first_32_bytes_of_a_response_with_the_ssl_flag() {
        let request = client_capabilities(capability::SSL);
        assert_eq!(request.len(), 32);
        let caps = u32::from_le_bytes(request[..4].try_into().unwrap());
        assert!(caps & capability::SSL != 0);
        let response = handshake_response("u", b"", "mysql_native_password", true);
        assert_eq!(&response[..32], &request[..]);
        assert_eq!(
            &handshake_response("u", b"", "mysql_native_password", false)[4..32],
            &request[4..]
        );
    }

    #[test]
    fn caching_sha2_full_authentication_encrypts_with_the_servers_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        sluice_testkit::mysql_protocol::make_rsa_key(&key);
        let pem = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);

        let mut auth = Authenticator::new("caching_sha2_password", NONCE, "s3cret-pw", false);
        assert_eq!(auth.on_reply(&[0x01, 0x04]).unwrap(), AuthStep::Send(vec![0x02]));
        let AuthStep::Send(cipher) = auth.on_reply(&[&[0x01][..], &pem].concat()).unwrap() else {
            panic!("the encrypted password must be sent")
        };
        assert_eq!(cipher.len(), 256, "one RSA-2048 block");
        let sent = dir.path().join("sent.bin");
        std::fs::write(&sent, &cipher).unwrap();
        let plain = openssl(&[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key.to_str().unwrap(),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-in",
            sent.to_str().unwrap(),
        ]);
        let password: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ NONCE[i % NONCE.len()])
            .collect();
        assert_eq!(password, b"s3cret-pw\0");
        assert_eq!(auth.on_reply(&[0x00, 0x00, 0x00, 0x02, 0x00]).unwrap(), AuthStep::Done);
    }

    #[test]
    fn a_bad_public_key_or_reply_is_an_error_not_a_panic() {
        let mut auth = Authenticator::new("caching_sha2_password", NONCE, "pw", false);
        auth.on_reply(&[0x01, 0x04]).unwrap();
        assert!(auth.on_reply(b"\x01not a key").is_err());
        let mut auth = Authenticator::new("caching_sha2_password", NONCE, "pw", false);
        auth.on_reply(&[0x01, 0x04]).unwrap();
        assert!(auth
            .on_reply(b"\x01-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err());
        assert!(Authenticator::new("caching_sha2_password", NONCE, "pw", false)
            .on_reply(&[0x01, 0x09])
            .is_err());
        assert!(Authenticator::new("mysql_native_password", NONCE, "pw", false)
            .on_reply(&[0x01, 0x04])
            .is_err());
        let mut err = vec![0xff];
        err.extend_from_slice(&1045u16.to_le_bytes());
        err.extend_from_slice(b"#28000Access denied");
        assert!(Authenticator::new("caching_sha2_password", NONCE, "pw", false)
            .on_reply(&err)
            .unwrap_err()
            .is_access_denied());
    }

    /// Auth switch request (Protocol::AuthSwitchRequest: FE, plugin name NUL, new nonce NUL):
    /// the reply is the new plugin's scramble of the new nonce.
    #[test]
    fn an_auth_switch_answers_with_the_new_plugins_scramble() {
        let mut auth = Authenticator::new("mysql_native_password", NONCE, "pw", false);
        let mut switch = vec![0xfe];
        switch.extend_from_slice(b"caching_sha2_password\0");
        switch.extend_from_slice(b"ABCDEFGHIJKLMNOPQRST\0");
        let expected = Authenticator::new("caching_sha2_password", b"ABCDEFGHIJKLMNOPQRST", "pw", false)
            .initial_response()
            .unwrap();
        assert_eq!(auth.on_reply(&switch).unwrap(), AuthStep::Send(expected));
        assert_eq!(auth.plugin(), "caching_sha2_password");
        assert_eq!(auth.on_reply(&[0x01, 0x03]).unwrap(), AuthStep::Wait);
    }

    /// COM_BINLOG_DUMP_GTID (MySQL docs, Replication Protocol): 1e, flags 0004
    /// (BINLOG_THROUGH_GTID), server id, file name length 0, position 4, then the GTID set's
    /// length and its Gtid_set::encode bytes: source count (8), UUID (16), interval count (8),
    /// intervals as [start, end) pairs (8 + 8).
    #[test]
    fn com_binlog_dump_gtid_carries_the_encoded_set() {
        let set: crate::gtid::MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7".parse().unwrap();
        let mut expected = vec![0x1e, 0x04, 0x00];
        expected.extend_from_slice(&42u32.to_le_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&(8u32 + 16 + 8 + 2 * 16).to_le_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62,
        ]);
        expected.extend_from_slice(&2u64.to_le_bytes());
        for v in [1u64, 6, 7, 8] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(com_binlog_dump_gtid(42, &set), expected);
        // The empty set: only the source count.
        let empty = com_binlog_dump_gtid(42, &crate::gtid::MysqlGtidSet::new());
        assert_eq!(&empty[19..], &[8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn debug_redacts_the_password() {
        let cfg = ReplicaConfig {
            tls: crate::tls::TlsSettings::disabled(),
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
