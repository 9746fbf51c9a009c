//! A stand-in MySQL 8 source that speaks the client/server protocol as far as a replica sees it.
//!
//! No MySQL server can be installed on the machines sluice is tested on, and no crate serves
//! the replication protocol (the server side of `COM_BINLOG_DUMP_GTID`), so this is
//! hand-written from MySQL's protocol documentation. It performs MySQL 8's handshake with
//! `caching_sha2_password` (fast authentication, or full authentication over TLS or with the
//! RSA public-key exchange), answers text queries from a table of canned result sets, and on
//! `COM_BINLOG_DUMP_GTID` streams the events of a real binlog file written by MySQL, leaving out
//! the transactions whose GTID the replica says it has, then heartbeats.
//!
//! What it does not do: run SQL (a query without a canned answer gets an error, unless
//! [`MysqlProtocolServerOptions::forward_to`] names a server to relay it to), purge binlogs,
//! rotate files, or check that the replica's server id is unique.
//!
//! With `forward_to`, queries without a canned answer (and not `SET`), prepared statements and
//! connection resets are relayed byte for byte to that server (testkit's MariaDB: `root`
//! without a password), one upstream connection per client connection, so that catalog reads,
//! table probes and backfill chunk reads see real tables while the replication side and the
//! GTID variables stay MySQL's (canned).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the server authenticates the (single) account it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sha2Auth {
    /// The password's hash is in the server's cache: the scramble is checked, `01 03`, OK.
    Fast,
    /// Not cached (as after a server restart): `01 04`, then the password in clear over TLS,
    /// or RSA-encrypted with the server's public key without TLS.
    Full,
}

/// Tells whether the replica already has the transaction starting with `gtid_event` (a raw
/// GTID / GTID_TAGGED event), given the encoded GTID set of its `COM_BINLOG_DUMP_GTID`. A
/// closure so that the test decodes GTIDs with the code under test's own types.
pub type HasTransaction = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// Decides, from the encoded GTID set of a `COM_BINLOG_DUMP_GTID`, whether the source refuses
/// the dump before sending anything, and with which error code and message (as MySQL does when
/// `gtid_mode` is not ON, or when it purged transactions the set lacks).
pub type RefuseDump = Arc<dyn Fn(&[u8]) -> Option<(u16, String)> + Send + Sync>;

/// A canned answer to one query: column names and text rows (`None` is NULL).
#[derive(Clone, Debug)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    /// One row of one column each, as `SELECT @@a, @@b` returns.
    pub fn row(pairs: &[(&str, &str)]) -> ResultSet {
        ResultSet {
            columns: pairs.iter().map(|(c, _)| c.to_string()).collect(),
            rows: vec![pairs.iter().map(|(_, v)| Some(v.to_string())).collect()],
        }
    }
}

/// What the server is and knows. `MysqlProtocolServerOptions::new(binlog)` gives MySQL 8.0.40,
/// user `repl` with password `repl-pw`, fast authentication, no TLS.
#[derive(Clone)]
pub struct MysqlProtocolServerOptions {
    pub server_version: String,
    pub user: String,
    pub password: String,
    pub auth: Sha2Auth,
    /// PEM certificate chain and key: TLS offered when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// PEM RSA private key for full authentication without TLS.
    pub rsa_key: Option<PathBuf>,
    /// The binlog file streamed on `COM_BINLOG_DUMP_GTID`.
    pub binlog: PathBuf,
    pub has_transaction: Option<HasTransaction>,
    pub refuse_dump: Option<RefuseDump>,
    /// Exact query texts (compared without surrounding blanks, case-insensitively) and their
    /// answers. `SET` statements get OK without an entry.
    pub queries: Vec<(String, ResultSet)>,
    /// The port of a server on 127.0.0.1 (user `root`, no password) that gets every query
    /// without a canned answer, and prepared statements; `None`: such queries get an error.
    pub forward_to: Option<u16>,
}

impl MysqlProtocolServerOptions {
    pub fn new(binlog: impl Into<PathBuf>) -> Self {
        MysqlProtocolServerOptions {
            server_version: "8.0.40".into(),
            user: "repl".into(),
            password: "repl-pw".into(),
            auth: Sha2Auth::Fast,
            tls: None,
            rsa_key: None,
            binlog: binlog.into(),
            has_transaction: None,
            refuse_dump: None,
            queries: Vec::new(),
            forward_to: None,
        }
    }
}

/// What replicas sent, for tests to check.
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub queries: Vec<String>,
    /// Server id and encoded GTID set of each `COM_BINLOG_DUMP_GTID`.
    pub dumps: Vec<(u32, Vec<u8>)>,
    /// Whether each authenticated connection came over TLS.
    pub tls: Vec<bool>,
}

/// A running server on 127.0.0.1; stopped when dropped.
pub struct MysqlProtocolServer {
    pub port: u16,
    received: Arc<Mutex<Received>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MysqlProtocolServer {
    /// Starts the server on a free port (its own thread and tokio runtime, so any test can
    /// use it).
    pub fn start(options: MysqlProtocolServerOptions) -> MysqlProtocolServer {
        let binlog =
            std::fs::read(&options.binlog).unwrap_or_else(|e| panic!("reading {}: {e}", options.binlog.display()));
        let public_key = options.rsa_key.as_deref().map(public_key_pem);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let received = Arc::new(Mutex::new(Received::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new(Shared {
            options,
            binlog,
            public_key,
            received: received.clone(),
        });
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    let mut id = 0u32;
                    while let Ok((tcp, _)) = listener.accept().await {
                        id += 1;
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            // A replica that goes away ends its connection; nothing to report.
                            let _ = serve(shared, Box::new(tcp), id).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        MysqlProtocolServer {
            port,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for MysqlProtocolServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> std::result::Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.unwrap_or_default()).map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

/// Makes a 2048-bit RSA private key at `path` (PEM), for [`MysqlProtocolServerOptions::rsa_key`].
pub fn make_rsa_key(path: &Path) {
    let path = path.to_str().expect("UTF-8 path");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path,
        ],
        None,
    )
    .unwrap();
}

/// Makes a self-signed certificate `{name}.pem` with key `{name}.key` in `dir` for `san` (an
/// openssl subjectAltName value such as `IP:127.0.0.1`). It is not a CA certificate, so a
/// client may trust it as its own `tls_ca_file` and check the chain and the host name
/// (`verify_identity`) against it.
pub fn make_self_signed_certificate(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key.to_str().expect("UTF-8 path"),
            "-out",
            cert.to_str().expect("UTF-8 path"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName={san}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
        None,
    )
    .unwrap();
    (cert, key)
}

fn public_key_pem(private: &Path) -> Vec<u8> {
    openssl(&["pkey", "-in", private.to_str().expect("UTF-8 path"), "-pubout"], None).unwrap()
}

struct Shared {
    options: MysqlProtocolServerOptions,
    binlog: Vec<u8>,
    public_key: Option<Vec<u8>>,
    received: Arc<Mutex<Received>>,
}

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Packets without read-ahead, so that the socket can be handed to TLS after the SSL request.
struct Conn {
    io: Box<dyn Transport>,
    seq: u8,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Conn {
    async fn read(&mut self) -> Result<Vec<u8>> {
        let mut head = [0u8; 4];
        self.io.read_exact(&mut head).await?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        self.seq = head[3].wrapping_add(1);
        let mut payload = vec![0; len];
        self.io.read_exact(&mut payload).await?;
        Ok(payload)
    }

    async fn write(&mut self, payload: &[u8]) -> Result<()> {
        // Test payloads stay below 16 MiB: one packet each.
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(self.seq);
        out.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.io.write_all(&out).await?;
        Ok(())
    }

    async fn ok(&mut self) -> Result<()> {
        self.write(&[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]).await
    }

    async fn err(&mut self, code: u16, state: &str, message: &str) -> Result<()> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(message.as_bytes());
        self.write(&p).await
    }
}

mod cap {
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const CONNECT_ATTRS: u32 = 0x0010_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const LONG_FLAG: u32 = 0x0000_0004;
}

const PLUGIN: &str = "caching_sha2_password";

fn nonce(id: u32) -> [u8; 20] {
    // Printable and never NUL (the handshake NUL-terminates it); differs per connection.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ id.wrapping_mul(2_654_435_761);
    let mut out = [0u8; 20];
    let mut x = seed | 1;
    for b in &mut out {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = b'!' + (x % 90) as u8;
    }
    out
}

fn handshake(version: &str, id: u32, nonce: &[u8; 20], caps: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&nonce[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(255); // utf8mb4_0900_ai_ci
    p.extend_from_slice(&2u16.to_le_bytes()); // SERVER_STATUS_AUTOCOMMIT
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&nonce[8..]);
    p.push(0);
    p.extend_from_slice(PLUGIN.as_bytes());
    p.push(0);
    p
}

/// The documented fast-authentication scramble:
/// XOR(SHA256(password), SHA256(SHA256(SHA256(password)) || nonce)).
fn sha2_scramble(password: &str, nonce: &[u8]) -> Vec<u8> {
    let stage1 = Sha256::digest(password.as_bytes());
    let stage2 = Sha256::digest(stage1);
    let stage3 = Sha256::digest([&stage2[..], nonce].concat());
    stage1.iter().zip(stage3.iter()).map(|(a, b)| a ^ b).collect()
}

fn lenenc(n: usize, out: &mut Vec<u8>) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
    }
}

fn read_lenenc(p: &[u8]) -> Option<(usize, &[u8])> {
    match *p.first()? {
        n @ 0..=250 => Some((usize::from(n), &p[1..])),
        0xfc => Some((usize::from(u16::from_le_bytes(p.get(1..3)?.try_into().ok()?)), &p[3..])),
        _ => None,
    }
}

/// The handshake response: capabilities, user name and auth data.
fn parse_response(p: &[u8]) -> Option<(u32, String, Vec<u8>)> {
    let caps = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let rest = p.get(32..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let rest = &rest[nul + 1..];
    let (len, rest) = if caps & cap::PLUGIN_AUTH_LENENC_DATA != 0 {
        read_lenenc(rest)?
    } else {
        (usize::from(*rest.first()?), &rest[1..])
    };
    Some((caps, user, rest.get(..len)?.to_vec()))
}

async fn serve(shared: Arc<Shared>, tcp: Box<dyn Transport>, id: u32) -> Result<()> {
    let o = &shared.options;
    let mut conn = Conn { io: tcp, seq: 0 };
    let nonce = nonce(id);
    let mut caps = cap::LONG_PASSWORD
        | cap::LONG_FLAG
        | cap::CONNECT_WITH_DB
        | cap::PROTOCOL_41
        | cap::TRANSACTIONS
        | cap::SECURE_CONNECTION
        | cap::PLUGIN_AUTH
        | cap::CONNECT_ATTRS
        | cap::PLUGIN_AUTH_LENENC_DATA
        | cap::DEPRECATE_EOF;
    if o.tls.is_some() {
        caps |= cap::SSL;
    }
    conn.write(&handshake(&o.server_version, id, &nonce, caps)).await?;
    let mut response = conn.read().await?;
    let mut tls = false;
    if response.len() == 32 {
        let Some((cert, key)) = &o.tls else {
            return Err("SSL request to a server without TLS".into());
        };
        let acceptor = tls_acceptor(cert, key)?;
        let seq = conn.seq;
        conn = Conn {
            io: Box::new(acceptor.accept(conn.io).await?),
            seq,
        };
        tls = true;
        response = conn.read().await?;
    }
    let Some((client_caps, user, auth)) = parse_response(&response) else {
        return conn.err(1043, "08S01", "Bad handshake").await;
    };
    let denied = format!(
        "Access denied for user '{user}'@'127.0.0.1' (using password: {})",
        if auth.is_empty() { "NO" } else { "YES" }
    );
    let password_ok = user == o.user
        && if o.password.is_empty() {
            auth.is_empty()
        } else {
            !auth.is_empty() && (o.auth == Sha2Auth::Full || auth == sha2_scramble(&o.password, &nonce))
        };
    if !password_ok {
        return conn.err(1045, "28000", &denied).await;
    }
    if !o.password.is_empty() {
        match o.auth {
            Sha2Auth::Fast => conn.write(&[0x01, 0x03]).await?,
            Sha2Auth::Full => {
                conn.write(&[0x01, 0x04]).await?;
                let reply = conn.read().await?;
                let clear = if tls {
                    reply
                } else if reply == [0x02] {
                    let Some(pem) = &shared.public_key else {
                        return conn
                            .err(
                                1045,
                                "28000",
                                "Authentication requires secure connection (no RSA key on this server)",
                            )
                            .await;
                    };
                    conn.write(&[&[0x01][..], pem].concat()).await?;
                    let cipher = conn.read().await?;
                    let key = o.rsa_key.as_deref().and_then(Path::to_str).unwrap_or_default();
                    let plain = openssl(
                        &[
                            "pkeyutl",
                            "-decrypt",
                            "-inkey",
                            key,
                            "-pkeyopt",
                            "rsa_padding_mode:oaep",
                        ],
                        Some(&cipher),
                    )
                    .unwrap_or_default();
                    plain
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ nonce[i % nonce.len()])
                        .collect()
                } else {
                    // MySQL refuses a clear password over an unencrypted connection.
                    return conn.err(1045, "28000", &denied).await;
                };
                if clear != [o.password.as_bytes(), &[0]].concat() {
                    return conn.err(1045, "28000", &denied).await;
                }
            }
        }
    }
    conn.ok().await?;
    shared.received.lock().unwrap().tls.push(tls);
    // What both sides agreed on: the format of every reply the client parses.
    commands(&shared, conn, client_caps & caps).await
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or("no private key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Session state the dump depends on, set by the replica's `SET` statements.
#[derive(Default)]
struct Session {
    checksum_aware: bool,
    heartbeat: Option<Duration>,
}

async fn commands(shared: &Shared, mut conn: Conn, client_caps: u32) -> Result<()> {
    let mut session = Session::default();
    let mut upstream: Option<Conn> = None;
    loop {
        let packet = conn.read().await?;
        if let Some(port) = shared.options.forward_to {
            let local = match packet.first() {
                Some(0x03) => {
                    let sql = String::from_utf8_lossy(&packet[1..]).trim().to_owned();
                    canned(shared, &sql).is_some() || sql.to_ascii_uppercase().starts_with("SET ")
                }
                // COM_RESET_CONNECTION: only an upstream session has anything to reset.
                Some(0x1f) => upstream.is_none(),
                // COM_STMT_PREPARE, _EXECUTE, _SEND_LONG_DATA, _CLOSE, _RESET.
                Some(0x16..=0x1a) => false,
                _ => true,
            };
            if !local {
                if packet.first() == Some(&0x03) {
                    let sql = String::from_utf8_lossy(&packet[1..]).trim().to_owned();
                    shared.received.lock().unwrap().queries.push(sql);
                }
                if upstream.is_none() {
                    upstream = Some(connect_upstream(port, client_caps).await?);
                }
                relay(upstream.as_mut().expect("connected"), &mut conn, &packet, client_caps).await?;
                continue;
            }
        }
        match packet.first() {
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&packet[1..]).trim().to_owned();
                shared.received.lock().unwrap().queries.push(sql.clone());
                if let Some(rs) = canned(shared, &sql) {
                    result_set(&mut conn, &rs, client_caps).await?;
                } else if sql.to_ascii_uppercase().starts_with("SET ") {
                    session.set(&sql);
                    conn.ok().await?;
                } else {
                    conn.err(1064, "42000", &format!("test server: no canned answer for {sql}"))
                        .await?;
                }
            }
            // COM_QUIT
            Some(0x01) => return Ok(()),
            // COM_PING, COM_REGISTER_SLAVE, COM_INIT_DB, COM_RESET_CONNECTION (nothing to reset)
            Some(0x0e | 0x15 | 0x02 | 0x1f) => conn.ok().await?,
            Some(0x1e) => return dump(shared, conn, &packet, &session).await,
            _ => conn.err(1047, "08S01", "Unknown command").await?,
        }
    }
}

/// The canned answer to `sql`, if any.
fn canned(shared: &Shared, sql: &str) -> Option<ResultSet> {
    shared
        .options
        .queries
        .iter()
        .find(|(q, _)| q.trim().eq_ignore_ascii_case(sql))
        .map(|(_, r)| r.clone())
        .or_else(|| client_setup_answer(sql))
        .or_else(|| executed_wait_answer(sql))
}

/// `SELECT WAIT_FOR_EXECUTED_GTID_SET('…', timeout)` (the backfill's wait before a snapshot):
/// 0, "executed", since everything this server streams counts as committed (MariaDB, where
/// forwarded reads go, has no such function).
fn executed_wait_answer(sql: &str) -> Option<ResultSet> {
    sql.trim()
        .get(..34)
        .is_some_and(|head| head.eq_ignore_ascii_case("SELECT WAIT_FOR_EXECUTED_GTID_SET("))
        .then(|| ResultSet::row(&[("WAIT_FOR_EXECUTED_GTID_SET", "0")]))
}

/// Logs in to the forwarding target as `root` without a password, asking for the capabilities
/// the client agreed on with this server (so that every reply relayed is in the format the
/// client expects), without TLS, a default schema or connection attributes.
async fn connect_upstream(port: u16, client_caps: u32) -> Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut up = Conn {
        io: Box::new(tcp),
        seq: 0,
    };
    let hello = up.read().await?;
    // Protocol 10: version, NUL, connection id (4), scramble (8), filler, capabilities low (2),
    // charset, status (2), capabilities high (2), …
    let version_end = hello.iter().position(|&b| b == 0).ok_or("bad upstream handshake")?;
    let at = version_end + 1 + 4 + 8 + 1;
    let low = u16::from_le_bytes(hello.get(at..at + 2).ok_or("short handshake")?.try_into()?);
    let high = u16::from_le_bytes(hello.get(at + 5..at + 7).ok_or("short handshake")?.try_into()?);
    let server_caps = u32::from(low) | u32::from(high) << 16;
    let caps = (client_caps & server_caps & !(cap::SSL | cap::CONNECT_WITH_DB | cap::CONNECT_ATTRS))
        | cap::PROTOCOL_41
        | cap::SECURE_CONNECTION
        | cap::PLUGIN_AUTH;
    let mut response = caps.to_le_bytes().to_vec();
    response.extend_from_slice(&(16u32 << 20).to_le_bytes());
    response.push(45); // utf8mb4_general_ci
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(b"root\0");
    response.push(0); // no auth data (lenenc or one-byte length: both 0)
    response.extend_from_slice(b"mysql_native_password\0");
    up.write(&response).await?;
    loop {
        let reply = up.read().await?;
        match reply.first() {
            Some(0x00) => return Ok(up),
            // An authentication switch: the empty password in any plugin is empty.
            Some(0xfe) => up.write(&[]).await?,
            _ => {
                return Err(format!(
                    "forwarding target refused the login: {}",
                    String::from_utf8_lossy(&reply)
                )
                .into())
            }
        }
    }
}

/// Sends `command` upstream and relays the reply to the client, packet by packet, until it is
/// complete (the client waits for it before its next command).
async fn relay(up: &mut Conn, client: &mut Conn, command: &[u8], caps: u32) -> Result<()> {
    up.seq = 0;
    up.write(command).await?;
    let deprecate_eof = caps & cap::DEPRECATE_EOF != 0;
    let mut pass = async || -> Result<Vec<u8>> {
        let packet = up.read().await?;
        client.write(&packet).await?;
        Ok(packet)
    };
    match command.first() {
        // COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: no reply.
        Some(0x18 | 0x19) => Ok(()),
        // COM_STMT_PREPARE: OK with the statement id, column and parameter counts, then the
        // parameter and column definitions, each list ended by EOF unless deprecated.
        Some(0x16) => {
            let first = pass().await?;
            if first.first() != Some(&0x00) {
                return Ok(());
            }
            let columns = u16::from_le_bytes(first.get(5..7).ok_or("short prepare OK")?.try_into()?);
            let params = u16::from_le_bytes(first.get(7..9).ok_or("short prepare OK")?.try_into()?);
            for n in [params, columns] {
                if n > 0 {
                    for _ in 0..n + u16::from(!deprecate_eof) {
                        pass().await?;
                    }
                }
            }
            Ok(())
        }
        // A query or an execution: OK, ERR, or a result set (column count, definitions, EOF
        // unless deprecated, rows, then EOF / OK marked 0xfe, or ERR).
        _ => {
            let first = pass().await?;
            if matches!(first.first(), Some(0x00 | 0xff) | None) {
                return Ok(());
            }
            if first.first() == Some(&0xfb) {
                return Err("LOCAL INFILE is not relayed".into());
            }
            let (columns, _) = read_lenenc(&first).ok_or("bad column count")?;
            for _ in 0..columns + usize::from(!deprecate_eof) {
                pass().await?;
            }
            loop {
                let row = pass().await?;
                // A row never starts with 0xfe in a packet this short (it would announce a
                // value of 2^24 bytes or more); ERR ends it too.
                match row.first() {
                    Some(0xff) => return Ok(()),
                    Some(0xfe) if row.len() < 0xff_ffff && (deprecate_eof || row.len() < 9) => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// What client libraries ask right after connecting (mysql_async reads these two), answered
/// with MySQL 8's defaults so that tests list only the queries they are about.
fn client_setup_answer(sql: &str) -> Option<ResultSet> {
    let compact: String = sql.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .eq_ignore_ascii_case("SELECT@@max_allowed_packet,@@wait_timeout")
        .then(|| ResultSet::row(&[("@@max_allowed_packet", "67108864"), ("@@wait_timeout", "28800")]))
}

impl Session {
    fn set(&mut self, sql: &str) {
        let lower = sql.to_ascii_lowercase();
        for assignment in lower.trim_start_matches("set ").split(',') {
            let Some((name, value)) = assignment.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            match name {
                // MySQL 8.0.26+ reads the source_ names; the master_ ones are its fallback.
                "@source_binlog_checksum" | "@master_binlog_checksum" => self.checksum_aware = true,
                "@source_heartbeat_period" | "@master_heartbeat_period" => {
                    if let Ok(ns) = value.parse::<u64>() {
                        self.heartbeat = Some(Duration::from_nanos(ns));
                    }
                }
                _ => {}
            }
        }
    }
}

async fn result_set(conn: &mut Conn, rs: &ResultSet, client_caps: u32) -> Result<()> {
    let deprecate_eof = client_caps & cap::DEPRECATE_EOF != 0;
    let mut count = Vec::new();
    lenenc(rs.columns.len(), &mut count);
    conn.write(&count).await?;
    for name in &rs.columns {
        let mut def = Vec::new();
        for s in ["def", "", "", "", name.as_str(), name.as_str()] {
            lenenc(s.len(), &mut def);
            def.extend_from_slice(s.as_bytes());
        }
        def.push(0x0c);
        def.extend_from_slice(&255u16.to_le_bytes());
        def.extend_from_slice(&1024u32.to_le_bytes());
        def.push(0xfd); // VAR_STRING
        def.extend_from_slice(&0u16.to_le_bytes());
        def.push(0x1f);
        def.extend_from_slice(&[0, 0]);
        conn.write(&def).await?;
    }
    if !deprecate_eof {
        conn.write(&[0xfe, 0, 0, 2, 0]).await?;
    }
    for row in &rs.rows {
        let mut p = Vec::new();
        for value in row {
            match value {
                Some(v) => {
                    lenenc(v.len(), &mut p);
                    p.extend_from_slice(v.as_bytes());
                }
                None => p.push(0xfb),
            }
        }
        conn.write(&p).await?;
    }
    if deprecate_eof {
        conn.write(&[0xfe, 0, 0, 2, 0, 0, 0]).await
    } else {
        conn.write(&[0xfe, 0, 0, 2, 0]).await
    }
}

mod event_type {
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const HEARTBEAT: u8 = 27;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const GTID_TAGGED: u8 = 42;
}

/// An artificial event (ROTATE or HEARTBEAT) as a source makes it: header, body, and a CRC32
/// when the binlog has checksums.
fn artificial_event(type_code: u8, server_id: u32, log_pos: u32, body: &[u8], crc: bool) -> Vec<u8> {
    const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;
    let size = 19 + body.len() + if crc { 4 } else { 0 };
    let mut e = Vec::with_capacity(size);
    e.extend_from_slice(&0u32.to_le_bytes());
    e.push(type_code);
    e.extend_from_slice(&server_id.to_le_bytes());
    e.extend_from_slice(&(size as u32).to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&LOG_EVENT_ARTIFICIAL_F.to_le_bytes());
    e.extend_from_slice(body);
    if crc {
        let sum = crc32fast::hash(&e);
        e.extend_from_slice(&sum.to_le_bytes());
    }
    e
}

/// The events of a binlog file (after the 4-byte magic), each whole.
fn events(binlog: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 4;
    while let Some(head) = binlog.get(at..at + 19) {
        let size = u32::from_le_bytes(head[9..13].try_into().expect("4 bytes")) as usize;
        match binlog.get(at..at + size) {
            Some(event) if size >= 19 => out.push(event),
            _ => break,
        }
        at += size;
    }
    out
}

async fn dump(shared: &Shared, mut conn: Conn, packet: &[u8], session: &Session) -> Result<()> {
    // 1e, flags (2), server id (4), name length (4), name, position (8), set length (4), set.
    let server_id = u32::from_le_bytes(packet.get(3..7).ok_or("short dump")?.try_into()?);
    let name_len = u32::from_le_bytes(packet.get(7..11).ok_or("short dump")?.try_into()?) as usize;
    let at = 11 + name_len + 8;
    let set_len = u32::from_le_bytes(packet.get(at..at + 4).ok_or("short dump")?.try_into()?) as usize;
    let set = packet.get(at + 4..at + 4 + set_len).ok_or("short dump")?.to_vec();
    shared.received.lock().unwrap().dumps.push((server_id, set.clone()));
    if let Some((code, message)) = shared.options.refuse_dump.as_ref().and_then(|refuse| refuse(&set)) {
        conn.seq = 1;
        return conn.err(code, "HY000", &message).await;
    }

    let events = events(&shared.binlog);
    let fde = events
        .iter()
        .find(|e| e[4] == event_type::FORMAT_DESCRIPTION)
        .ok_or("the binlog has no FORMAT_DESCRIPTION")?;
    // The FORMAT_DESCRIPTION ends with the checksum algorithm (1 = CRC32) and its own CRC.
    let crc = fde.len() >= 5 && fde[fde.len() - 5] == 1;
    if crc && !session.checksum_aware {
        // What MySQL answers a replica that did not say it handles checksums.
        return conn
            .err(
                1236,
                "HY000",
                "Slave can not handle replication events with the checksum that master is configured to log",
            )
            .await;
    }
    let file = shared
        .options
        .binlog
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source_id = u32::from_le_bytes(fde[5..9].try_into()?);
    conn.seq = 1;
    // A source starts every dump with an artificial ROTATE naming the file.
    let mut rotate = 4u64.to_le_bytes().to_vec();
    rotate.extend_from_slice(file.as_bytes());
    send_event(
        &mut conn,
        &artificial_event(event_type::ROTATE, source_id, 0, &rotate, crc),
    )
    .await?;
    // As MySQL's Binlog_sender::send_events: a transaction the replica has is left out, and a
    // heartbeat carrying the position after it precedes the next event sent (or ends the file).
    let (mut skipping, mut skipped_to) = (false, None);
    let mut at = 4u32;
    for event in &events {
        match event[4] {
            event_type::GTID | event_type::ANONYMOUS_GTID | event_type::GTID_TAGGED => {
                skipping = event[4] != event_type::ANONYMOUS_GTID
                    && shared
                        .options
                        .has_transaction
                        .as_ref()
                        .is_some_and(|has| has(&set, event));
            }
            event_type::ROTATE | event_type::FORMAT_DESCRIPTION => skipping = false,
            _ => {}
        }
        at += event.len() as u32;
        if skipping {
            skipped_to = Some(at);
            continue;
        }
        if let Some(pos) = skipped_to.take() {
            let heartbeat = artificial_event(event_type::HEARTBEAT, source_id, pos, file.as_bytes(), crc);
            send_event(&mut conn, &heartbeat).await?;
        }
        send_event(&mut conn, event).await?;
    }
    let end = shared.binlog.len() as u32;
    if let Some(pos) = skipped_to {
        let heartbeat = artificial_event(event_type::HEARTBEAT, source_id, pos, file.as_bytes(), crc);
        send_event(&mut conn, &heartbeat).await?;
    }
    let Some(period) = session.heartbeat.filter(|p| !p.is_zero()) else {
        // Without a heartbeat period the source sends nothing more until new events arrive.
        std::future::pending::<()>().await;
        return Ok(());
    };
    loop {
        tokio::time::sleep(period).await;
        send_event(
            &mut conn,
            &artificial_event(event_type::HEARTBEAT, source_id, end, file.as_bytes(), crc),
        )
        .await?;
    }
}

async fn send_event(conn: &mut Conn, event: &[u8]) -> Result<()> {
    conn.write(&[&[0x00][..], event].concat()).await
}
