//! `medbus topics --data-dir D`: the topics of a stopped broker, with their
//! first and last offsets and record counts.

use crate::storage::{StorageError, TopicInfo};

/// Every topic in the data directory.
pub fn run(data_dir: &std::path::Path) -> Result<Vec<TopicInfo>, StorageError> {
    let store = super::dump::open_offline(data_dir)?;
    let topics = store.topics();
    store.close();
    topics
}

/// Render as an aligned table.
pub fn render(topics: &[TopicInfo]) -> String {
    let width = topics
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>12}  {:>12}\n",
        "TOPIC", "FIRST", "LAST", "COUNT"
    );
    let show = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for t in topics {
        out.push_str(&format!(
            "{:<width$}  {:>12}  {:>12}  {:>12}\n",
            t.name,
            show(t.first),
            show(t.last),
            t.count
        ));
    }
    out
}
