//! `medbus dump TOPIC --data-dir D`: a stopped broker's topic as JSON lines,
//! `{"topic","offset","timestamp_ms","headers","content_type","payload"}`.
//! `payload` is the JSON value itself for JSON content types and a string
//! otherwise (HL7 segments separated by `\r`).

use crate::storage::{Record, StorageError, Store, StoreOptions};
use medbus_config::Durability;
use std::io::Write;
use std::path::Path;

/// Records read per storage call.
const PAGE: usize = 1024;

/// Open a data directory for offline reading (fails if a broker holds it).
pub fn open_offline(data_dir: &Path) -> Result<Store, StorageError> {
    if !data_dir.join("db").exists() {
        return Err(StorageError::Sled(format!(
            "{} is not a medbus data directory",
            data_dir.display()
        )));
    }
    Store::open(
        data_dir,
        StoreOptions {
            durability: Durability::Flush,
            max_batch: 1,
            cache_bytes: 16 << 20,
            min_free: 0,
            max_topics: usize::MAX,
            commit_timeout: std::time::Duration::from_secs(30),
            observer: None,
            segment_bytes: crate::storage::DEFAULT_SEGMENT_BYTES,
        },
    )
}

/// One record as the JSON object `dump` and `tail` print.
pub fn record_json(topic: &str, offset: u64, r: &Record) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let payload = if r.content_type.contains("json") {
        serde_json::from_slice(&r.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&r.payload).into_owned())
        })
    } else {
        serde_json::Value::String(String::from_utf8_lossy(&r.payload).into_owned())
    };
    let mut out = serde_json::json!({
        "topic": topic,
        "offset": offset,
        "timestamp_ms": r.timestamp_ms,
        "headers": headers,
        "content_type": r.content_type,
        "payload": payload,
    });
    // Bytes that are not UTF-8 (an HL7 message in ISO 8859-1, say) are
    // shown replaced in `payload`; the bytes themselves come here.
    if std::str::from_utf8(&r.payload).is_err() {
        use base64::Engine as _;
        out["payload_base64"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&r.payload));
    }
    out
}

/// Print up to `count` records of `topic` from `from` on; returns how many.
pub fn run(
    data_dir: &Path,
    topic: &str,
    from: u64,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, StorageError> {
    let store = open_offline(data_dir)?;
    let result = (|| {
        let mut next = from;
        let mut printed = 0u64;
        loop {
            let want = match count {
                Some(c) if printed >= c => break,
                Some(c) => PAGE.min((c - printed) as usize),
                None => PAGE,
            };
            let page = store.read(topic, next, want)?;
            let Some((last, _)) = page.last() else { break };
            next = last + 1;
            for (offset, r) in &page {
                let line = record_json(topic, *offset, r);
                writeln!(out, "{line}")
                    .map_err(|e| StorageError::Sled(format!("write failed: {e}")))?;
                printed += 1;
            }
        }
        Ok(printed)
    })();
    store.close();
    result
}
