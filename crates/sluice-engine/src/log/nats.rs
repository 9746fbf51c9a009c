//! The fan-out log on NATS JetStream: one stream, one subject (`sluice.<stream>`), file
//! storage. Each entry is one message whose `Nats-Msg-Id` is the entry's id, so JetStream
//! drops a repeated append inside its duplicate window; the header [`POSITION_HEADER`] holds
//! the source position before the entry's transaction, from which a publisher resumes.
//!
//! Consumers read with an ordered consumer (ephemeral, no acknowledgements) from the stream
//! sequence after their target's checkpoint: the target's checkpoint is the consumer's only
//! state, so nothing on the server needs to be kept per edge.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use sluice_binlog::SourcePosition;

use super::{gtid_of_id, Entry, LogCursor, LogError, ResumePoint, TransactionLog};
use crate::config::NatsLogConfig;

/// The source position before the entry's transaction (`0-1-41,1-2-7`).
pub const POSITION_HEADER: &str = "Sluice-Position";

/// Room left in a message for its headers (id, position).
const HEADER_ALLOWANCE: usize = 4 * 1024;

pub struct NatsLog {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    max_payload: usize,
}

fn backend(operation: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LogError {
    move |e| LogError::Backend {
        operation,
        message: e.to_string(),
    }
}

impl NatsLog {
    /// Connects; with `create`, creates the stream when it does not exist (the publisher).
    pub async fn connect(config: &NatsLogConfig, create: bool) -> Result<NatsLog, LogError> {
        let connect_error = |message: String| LogError::Connect {
            url: config.url.clone(),
            message,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name("sluice")
            .connection_timeout(Duration::from_secs(10))
            // Keep trying while the server restarts; operations time out meanwhile.
            .retry_on_initial_connect();
        if let Some(path) = &config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| connect_error(format!("cannot read credentials_file {}: {e}", path.display())))?;
        }
        let client = tokio::time::timeout(Duration::from_secs(15), async {
            let client = options
                .connect(config.url.as_str())
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            // `retry_on_initial_connect` returns before connecting; wait for the first one
            // so that a wrong address fails the start instead of hanging.
            while client.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, LogError>(client)
        })
        .await
        .map_err(|_| connect_error("no connection within 15 s".into()))??;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client);
        let subject = config.subject();
        let stream = if create {
            js.get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| connect_error(format!("cannot create or open stream {}: {e}", config.stream)))?
        } else {
            js.get_stream(&config.stream).await.map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    LogError::NoStream {
                        stream: config.stream.clone(),
                    }
                }
                _ => connect_error(format!("cannot open stream {}: {e}", config.stream)),
            })?
        };
        Ok(NatsLog {
            js,
            stream,
            subject,
            max_payload,
        })
    }

    /// The number of entries the stream holds and the offset of the last.
    pub async fn entries(&self) -> Result<(u64, u64), LogError> {
        let info = self.stream.get_info().await.map_err(backend_info)?;
        Ok((info.state.messages, info.state.last_sequence))
    }

    async fn bounds(&self) -> Result<(u64, u64), LogError> {
        let info = self.stream.get_info().await.map_err(backend_info)?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// The message at `seq`: its id and, on request, the whole entry.
    async fn message(&self, seq: u64) -> Result<jetstream::message::StreamMessage, LogError> {
        self.stream
            .get_raw_message(seq)
            .await
            .map_err(|e| backend("read a message")(&e))
    }
}

fn backend_info(e: stream::InfoError) -> LogError {
    backend("read the stream's state")(&e)
}

fn message_id(message: &jetstream::message::StreamMessage) -> String {
    message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

impl TransactionLog for NatsLog {
    fn max_entry_bytes(&self) -> usize {
        self.max_payload.saturating_sub(HEADER_ALLOWANCE)
    }

    async fn append(&self, entry: &Entry, encoded: Vec<u8>, position_before: &SourcePosition) -> Result<(), LogError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(encoded.into())
            .message_id(entry.id())
            .header(POSITION_HEADER, position_before.to_string().as_str());
        let ack = self
            .js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| backend("publish")(&e))?;
        ack.await.map_err(|e| backend("publish (acknowledgement)")(&e))?;
        Ok(())
    }

    async fn resume_point(&self) -> Result<Option<ResumePoint>, LogError> {
        let (_, last) = self.bounds().await?;
        if last == 0 {
            return Ok(None);
        }
        let message = self.message(last).await?;
        let id = message_id(&message);
        let position_before: SourcePosition = message
            .headers
            .get(POSITION_HEADER)
            .and_then(|v| v.as_str().parse().ok())
            .ok_or_else(|| LogError::Corrupt {
                id: id.clone(),
                message: format!("no valid {POSITION_HEADER} header"),
            })?;
        let entry = Entry::decode(&id, &message.payload)?;
        Ok(Some(ResumePoint::after(&entry, position_before)))
    }

    async fn first_not_covered(&self, low_water: &SourcePosition) -> Result<u64, LogError> {
        let (first, last) = self.bounds().await?;
        if last == 0 || first > last {
            return Ok(last + 1);
        }
        let covered = |message: &jetstream::message::StreamMessage| -> Result<bool, LogError> {
            let id = message_id(message);
            let gtid = gtid_of_id(&id).ok_or_else(|| LogError::Corrupt {
                id: id.clone(),
                message: "the message id is not an entry id".into(),
            })?;
            Ok(low_water.contains(gtid))
        };
        let oldest = self.message(first).await?;
        if !covered(&oldest)? {
            // Entries were removed before the oldest one: were they all applied here?
            if first > 1 {
                return Err(LogError::Truncated {
                    checkpoint: low_water.to_string(),
                    oldest: message_id(&oldest),
                });
            }
            return Ok(first);
        }
        // Entries are in source order and the low-water mark holds a prefix of it: binary
        // search for the first entry past it.
        let (mut lo, mut hi) = (first + 1, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if covered(&self.message(mid).await?)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    async fn read_from(&self, offset: u64) -> Result<impl LogCursor, LogError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: offset },
                ..Default::default()
            })
            .await
            .map_err(|e| backend("create an ordered consumer")(&e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| backend("read from the ordered consumer")(&e))?;
        Ok(NatsCursor { messages })
    }
}

pub struct NatsCursor {
    messages: consumer::pull::Ordered,
}

impl LogCursor for NatsCursor {
    async fn next(&mut self) -> Result<(u64, Entry), LogError> {
        let message = match self.messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(backend("read the next entry")(&e)),
            None => {
                return Err(LogError::Backend {
                    operation: "read the next entry",
                    message: "the consumer ended".into(),
                })
            }
        };
        let offset = message
            .info()
            .map_err(|e| backend("read the entry's stream sequence")(&e))?
            .stream_sequence;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let entry = Entry::decode(&id, &message.payload)?;
        if entry.id() != id {
            return Err(LogError::Corrupt {
                id,
                message: format!("the entry inside is {}", entry.id()),
            });
        }
        Ok((offset, entry))
    }
}
