//! A MySQL 8 source over the replication protocol, against sluice-testkit's protocol test
//! server (no MySQL server can be installed here): `caching_sha2_password` fast and full
//! authentication (over TLS, and with the RSA key exchange without it), a wrong password,
//! `COM_BINLOG_DUMP_GTID` from an empty set and from a set covering the first transactions
//! (tagged GTIDs included), and the checksums of the real MySQL 8.0.26 binlog bytes it streams.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_binlog::gtid::Uuid;
use sluice_binlog::mysql_gtid::decode_gtid_set;
use sluice_binlog::replica::{BinlogStream, ReplicaConfig};
use sluice_binlog::tls::{TlsMode, TlsSettings};
use sluice_binlog::{DumpStart, EventBody, EventDecoder, GtidPosition, MysqlGtidSet, SourceFlavor};
use sluice_testkit::mysql_protocol::{make_rsa_key, make_self_signed_certificate, Sha2Auth};
use sluice_testkit::{MysqlProtocolServer, MysqlProtocolServerOptions};

/// Written by MySQL 8.0.26 with CRC32 checksums: three GTID transactions
/// fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:1-3.
const FIXTURE: &str = "mysql_type_bit.000001";
const SOURCE_UUID: &str = "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mysql-binlogs")
        .join(FIXTURE)
}

/// The fixture's events as stored in the file, each whole (header to checksum).
fn file_events() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(fixture()).unwrap();
    let mut out = Vec::new();
    let mut at = 4;
    while at + 19 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push(bytes[at..at + size].to_vec());
        at += size;
    }
    out
}

/// Decides as a MySQL source does whether the replica has a transaction: its GTID (from the
/// raw GTID event: header 19, flags 1, UUID 16, number 8) is in the dump's set.
fn has_transaction() -> sluice_testkit::mysql_protocol::HasTransaction {
    Arc::new(|set: &[u8], event: &[u8]| {
        let set = decode_gtid_set(set).expect("the replica's GTID set decodes");
        let uuid = Uuid::from_bytes(event[20..36].try_into().unwrap());
        let gno = u64::from_le_bytes(event[36..44].try_into().unwrap());
        set.contains_gtid(&uuid, None, gno)
    })
}

fn options() -> MysqlProtocolServerOptions {
    let mut o = MysqlProtocolServerOptions::new(fixture());
    o.server_version = "8.0.26".into();
    o.has_transaction = Some(has_transaction());
    o
}

fn config(server: &MysqlProtocolServer, password: &str) -> ReplicaConfig {
    ReplicaConfig {
        host: "127.0.0.1".into(),
        port: server.port,
        user: "repl".into(),
        password: password.into(),
        server_id: 4242,
        heartbeat: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(5),
        tls: TlsSettings::disabled(),
    }
}

/// Every event but heartbeats, until a heartbeat at the file's end: the source sends those
/// once it has nothing more. Heartbeats before that stand for skipped transactions (MySQL
/// sends one after each group the replica has).
async fn events_until_heartbeat(stream: &mut BinlogStream) -> Vec<Vec<u8>> {
    let end = std::fs::metadata(fixture()).unwrap().len() as u32;
    let mut out = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next_event())
            .await
            .expect("an event or heartbeat within 10 s")
            .expect("the stream stays up");
        if event[4] == 27 {
            let log_pos = u32::from_le_bytes(event[13..17].try_into().unwrap());
            if log_pos == end {
                return out;
            }
            continue;
        }
        out.push(event);
    }
}

fn gtids(events: &[Vec<u8>]) -> Vec<String> {
    let mut decoder = EventDecoder::new();
    let mut out = Vec::new();
    for raw in events {
        if let EventBody::MysqlGtid(g) = decoder.decode(raw).expect("decodes, checksum verified").body {
            out.push(g.gtid_text().unwrap());
        }
    }
    out
}

#[tokio::test]
async fn fast_authentication_and_a_dump_from_the_empty_set_gets_every_event() {
    let server = MysqlProtocolServer::start(options());
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    assert_eq!(stream.flavor, SourceFlavor::Mysql);
    assert_eq!(stream.server_version, "8.0.26");
    let events = events_until_heartbeat(&mut stream).await;
    // The artificial ROTATE first, then the file's events byte for byte.
    assert_eq!(events[0][4], 4, "ROTATE first");
    assert_eq!(&events[1..], &file_events()[..]);
    assert_eq!(gtids(&events), [1, 2, 3].map(|n| format!("{SOURCE_UUID}:{n}")));

    let received = server.received();
    assert_eq!(received.tls, [false]);
    assert!(
        received
            .queries
            .iter()
            .any(|q| q.contains("@source_binlog_checksum") && q.contains("@master_binlog_checksum")),
        "{:?}",
        received.queries
    );
    assert!(
        received
            .queries
            .iter()
            .any(|q| q.contains("@source_heartbeat_period = 200000000")),
        "{:?}",
        received.queries
    );
    assert_eq!(received.dumps.len(), 1);
    assert_eq!(received.dumps[0].0, 4242);
    assert!(decode_gtid_set(&received.dumps[0].1).unwrap().is_empty());
}

#[tokio::test]
async fn a_dump_from_a_set_covering_the_first_transactions_starts_after_them() {
    let server = MysqlProtocolServer::start(options());
    // Two of the source's transactions, and a tagged GTID of another server (MySQL 8.4+).
    let have: MysqlGtidSet = format!("{SOURCE_UUID}:1-2,11111111-2222-3333-4444-555555555555:blue:1-9")
        .parse()
        .unwrap();
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&have))
        .await
        .unwrap();
    let events = events_until_heartbeat(&mut stream).await;
    assert_eq!(gtids(&events), [format!("{SOURCE_UUID}:3")]);
    // The set went over the wire intact, tag included.
    assert_eq!(decode_gtid_set(&server.received().dumps[0].1).unwrap(), have);
    // FORMAT_DESCRIPTION and PREVIOUS_GTIDS are not part of a transaction: always sent.
    let types: Vec<u8> = events.iter().map(|e| e[4]).collect();
    assert_eq!(&types[..3], &[4, 15, 35]);

    // A set covering everything: nothing but the file's header events, then heartbeats.
    let all: MysqlGtidSet = format!("{SOURCE_UUID}:1-3").parse().unwrap();
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&all))
        .await
        .unwrap();
    assert!(gtids(&events_until_heartbeat(&mut stream).await).is_empty());
}

#[tokio::test]
async fn checksums_are_verified_on_the_streamed_bytes() {
    let server = MysqlProtocolServer::start(options());
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    let events = events_until_heartbeat(&mut stream).await;
    let mut decoder = EventDecoder::new();
    let mut rows = 0;
    for raw in &events {
        let event = decoder.decode(raw).expect("every checksum matches");
        if matches!(event.body, EventBody::Rows(_)) {
            rows += 1;
        }
    }
    assert!(rows > 0, "the fixture has row events");
    assert!(decoder.format().server_version.starts_with("8.0.26"));
    // One flipped byte in the last row event's body is caught by its CRC32.
    let (i, _) = events
        .iter()
        .enumerate()
        .rev()
        .find(|(_, e)| matches!(e[4], 30..=32))
        .unwrap();
    let mut decoder = EventDecoder::new();
    for raw in &events[..i] {
        decoder.decode(raw).unwrap();
    }
    let mut bad = events[i].clone();
    bad[25] ^= 0x01;
    let err = decoder.decode(&bad).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[tokio::test]
async fn full_authentication_with_the_rsa_key_exchange_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("private_key.pem");
    make_rsa_key(&key);
    let mut o = options();
    o.auth = Sha2Auth::Full;
    o.rsa_key = Some(key);
    let server = MysqlProtocolServer::start(o);
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    assert_eq!(gtids(&events_until_heartbeat(&mut stream).await).len(), 3);
    assert_eq!(server.received().tls, [false]);

    // The wrong password through the same exchange is refused.
    let err = BinlogStream::connect_from(&config(&server, "nope"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap_err();
    assert!(err.is_access_denied(), "{err}");
}

/// A server whose certificate is for `san`, with full authentication (the password goes over
/// TLS), and a client config trusting that certificate with `mode`.
fn tls_server_and_config(dir: &std::path::Path, san: &str, mode: TlsMode) -> (MysqlProtocolServer, ReplicaConfig) {
    let (cert, key) = make_self_signed_certificate(dir, "server", san);
    let mut o = options();
    o.auth = Sha2Auth::Full;
    o.tls = Some((cert.clone(), key));
    let server = MysqlProtocolServer::start(o);
    let mut cfg = config(&server, "repl-pw");
    cfg.tls = TlsSettings {
        mode,
        ca_file: Some(cert),
        ..TlsSettings::disabled()
    };
    (server, cfg)
}

#[tokio::test]
async fn full_authentication_over_verified_tls_sends_the_password_encrypted_by_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cfg) = tls_server_and_config(dir.path(), "IP:127.0.0.1", TlsMode::VerifyIdentity);
    let mut stream = BinlogStream::connect_from(&cfg, DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    assert_eq!(gtids(&events_until_heartbeat(&mut stream).await).len(), 3);
    assert_eq!(server.received().tls, [true]);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_before_the_password_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cfg) = tls_server_and_config(dir.path(), "DNS:db.example", TlsMode::VerifyIdentity);
    let err = BinlogStream::connect_from(&cfg, DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS to the source"), "{err}");
    assert!(server.received().tls.is_empty(), "nobody authenticated");
    // verify_ca checks the chain only: the same certificate passes.
    let mut cfg = cfg;
    cfg.tls.mode = TlsMode::VerifyCa;
    BinlogStream::connect_from(&cfg, DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    assert_eq!(server.received().tls, [true]);
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_clear_message() {
    let server = MysqlProtocolServer::start(options());
    let err = BinlogStream::connect_from(&config(&server, "wrong"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap_err();
    assert!(err.is_access_denied(), "{err}");
    let message = err.to_string();
    assert!(message.contains("Access denied for user 'repl'"), "{message}");
    assert!(server.received().dumps.is_empty());
}

#[tokio::test]
async fn a_mariadb_position_is_refused_by_a_mysql_source_before_any_dump() {
    let server = MysqlProtocolServer::start(options());
    let position: GtidPosition = "0-1-5".parse().unwrap();
    let err = BinlogStream::connect(&config(&server, "repl-pw"), &position)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is MySQL (8.0.26)"), "{err}");
    assert!(err.contains("MariaDB GTID position"), "{err}");
    assert!(server.received().dumps.is_empty());
}

/// MySQL's answer when it purged transactions the replica lacks
/// (ER_SOURCE_HAS_PURGED_REQUIRED_GTIDS, sent as error 1236), from the set in the dump.
fn refuse_if_purged(purged: MysqlGtidSet) -> sluice_testkit::mysql_protocol::RefuseDump {
    Arc::new(move |set: &[u8]| {
        let have = decode_gtid_set(set).expect("the replica's GTID set decodes");
        let missing = purged.subtract(&have);
        (!missing.is_empty()).then(|| {
            (
                1236,
                format!(
                    "Cannot replicate because the source purged required binary logs. Replicate the missing \
                     transactions from elsewhere, or provision a new replica from backup. Consider increasing the \
                     source's binary log expiration period. The GTID set sent by the replica is '{have}', and the \
                     missing transactions are '{missing}'"
                ),
            )
        })
    })
}

#[tokio::test]
async fn a_source_that_purged_what_the_set_lacks_refuses_and_sluice_calls_it_unavailable() {
    let mut o = options();
    o.refuse_dump = Some(refuse_if_purged(format!("{SOURCE_UUID}:1-2").parse().unwrap()));
    let server = MysqlProtocolServer::start(o);
    let have: MysqlGtidSet = format!("{SOURCE_UUID}:1").parse().unwrap();
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&have))
        .await
        .unwrap();
    let err = stream.next_event().await.unwrap_err();
    assert!(err.is_position_unavailable(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("missing transactions are '{SOURCE_UUID}:2'")),
        "{err}"
    );

    // A set holding everything purged is served.
    let have: MysqlGtidSet = format!("{SOURCE_UUID}:1-2").parse().unwrap();
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&have))
        .await
        .unwrap();
    assert_eq!(
        gtids(&events_until_heartbeat(&mut stream).await),
        [format!("{SOURCE_UUID}:3")]
    );
}

#[tokio::test]
async fn a_source_without_gtid_mode_on_refuses_the_gtid_dump_with_its_reason() {
    let mut o = options();
    o.refuse_dump = Some(Arc::new(|_: &[u8]| {
        Some((
            1236,
            "The replication sender thread cannot start in AUTO_POSITION mode: this server has GTID_MODE = OFF \
             instead of ON."
                .to_string(),
        ))
    }));
    let server = MysqlProtocolServer::start(o);
    let mut stream = BinlogStream::connect_from(&config(&server, "repl-pw"), DumpStart::Mysql(&MysqlGtidSet::new()))
        .await
        .unwrap();
    let err = stream.next_event().await.unwrap_err().to_string();
    assert!(err.contains("GTID_MODE = OFF"), "{err}");
}
