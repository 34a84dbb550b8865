//! Optional sinks that record messages outside Kafka; today MongoDB ([`mongo`]).
//!
//! This file holds what the rest of the program needs to know about a sink without talking to
//! it: how a topic names its database, and the counts a run reports ([`MongoResult`], printed by
//! [`write_text`]). The database itself is only reached from [`mongo`].

pub mod mongo;

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::workload::audit::add_count;

/// Characters MongoDB forbids in database names.
const FORBIDDEN: &str = "/\\. \"$*<>:|?\0";
/// MongoDB's limit on a database name, in bytes.
const MAX_DATABASE_NAME: usize = 63;

/// The MongoDB database name for a topic. client.py used the topic itself, which breaks for names
/// MongoDB refuses; the mapping:
///
/// * characters MongoDB forbids in database names (of a legal Kafka topic name, only `.`) become
///   `_`. Kafka itself refuses a topic whose name differs from an existing one only by `.` versus
///   `_`, so two topics of one cluster never map to the same name this way;
/// * a name longer than 63 bytes keeps its first 54 bytes and ends with `-` and 8 hex digits of
///   the FNV-1a (32-bit) hash of the whole topic name, so long names that share a beginning stay
///   apart.
///
/// Everything else (letters, digits, `-`, `_`) is kept, which also satisfies FerretDB's stricter
/// `^[a-zA-Z0-9_-]{1,63}$`. MongoDB treats names that differ only in case as the same database;
/// topics like that need `--mongo-db`.
pub fn database_name_for_topic(topic: &str) -> String {
    let mut name: String = topic
        .chars()
        .map(|c| if FORBIDDEN.contains(c) { '_' } else { c })
        .collect();
    if name.len() > MAX_DATABASE_NAME {
        let mut cut = MAX_DATABASE_NAME - 9;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str(&format!("-{:08x}", fnv1a32(topic.as_bytes())));
    }
    name
}

/// Whether `name` may name a MongoDB database (for `--mongo-db`); the error says why not.
pub fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a database name cannot be empty".into());
    }
    if name.len() > MAX_DATABASE_NAME {
        return Err(format!("{name:?} is longer than {MAX_DATABASE_NAME} bytes"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(*c)) {
        return Err(format!(
            "{name:?} contains {c:?}, which MongoDB does not allow in a database name"
        ));
    }
    Ok(())
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// What the MongoDB sink stored during a run (`--mongo-uri`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MongoResult {
    /// The database written to.
    pub database: String,
    /// The `producer` collection, when the run produced.
    pub producer: Option<MongoCollectionResult>,
    /// The `consumer` collection, when the run consumed.
    pub consumer: Option<MongoCollectionResult>,
}

impl MongoResult {
    /// Several instances' results as one: counts added per collection, distinct database names
    /// joined with `,`; `None` when none of them used MongoDB; an error when a count would pass
    /// u64::MAX.
    pub fn merged<'a>(
        parts: impl IntoIterator<Item = &'a MongoResult>,
    ) -> anyhow::Result<Option<MongoResult>> {
        let mut out: Option<MongoResult> = None;
        for part in parts {
            let m = out.get_or_insert_with(Default::default);
            if !m.database.split(',').any(|d| d == part.database) {
                if !m.database.is_empty() {
                    m.database.push(',');
                }
                m.database.push_str(&part.database);
            }
            for (sum, add) in [
                (&mut m.producer, &part.producer),
                (&mut m.consumer, &part.consumer),
            ] {
                if let Some(add) = add {
                    let sum = sum.get_or_insert_with(|| MongoCollectionResult {
                        collection: add.collection.clone(),
                        ..Default::default()
                    });
                    sum.written = add_count(sum.written, add.written, "MongoDB writes")?;
                    sum.duplicates =
                        add_count(sum.duplicates, add.duplicates, "MongoDB duplicates")?;
                    sum.batches = add_count(sum.batches, add.batches, "MongoDB batches")?;
                    sum.retries = add_count(sum.retries, add.retries, "MongoDB retries")?;
                    sum.unstored = add_count(sum.unstored, add.unstored, "unstored records")?;
                }
            }
        }
        Ok(out)
    }
}

/// What one collection's writer did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MongoCollectionResult {
    /// `producer` or `consumer`.
    pub collection: String,
    /// Documents this run inserted.
    pub written: u64,
    /// Documents that were already there (a replay after a restart or rebalance): counted, not
    /// written again.
    pub duplicates: u64,
    /// `insert_many` batches completed.
    pub batches: u64,
    /// Failed write attempts that were retried.
    pub retries: u64,
    /// Records handed to the sink that were never stored because the sink gave up; their Kafka
    /// offsets were not committed.
    pub unstored: u64,
}

/// Prints the sink's lines of the human summary.
pub fn write_text(w: &mut impl Write, m: &MongoResult) -> std::io::Result<()> {
    for c in [&m.producer, &m.consumer].into_iter().flatten() {
        writeln!(
            w,
            "mongodb: {}.{}: {} written, {} duplicates, {} batches, {} retries{}",
            m.database,
            c.collection,
            c.written,
            c.duplicates,
            c.batches,
            c.retries,
            if c.unstored > 0 {
                format!(", {} NOT stored", c.unstored)
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_map_to_valid_database_names() {
        assert_eq!(database_name_for_topic("hot-topic"), "hot-topic");
        assert_eq!(database_name_for_topic("app.events/v1"), "app_events_v1");
        for topic in ["x".repeat(100), "a.b".repeat(40)] {
            let name = database_name_for_topic(&topic);
            assert_eq!(name.len(), 63);
            assert_eq!(check_database_name(&name), Ok(()));
        }
    }

    #[test]
    fn long_topic_names_sharing_a_beginning_map_to_different_databases() {
        let a = database_name_for_topic(&format!("{}-a", "t".repeat(80)));
        let b = database_name_for_topic(&format!("{}-b", "t".repeat(80)));
        assert_ne!(a, b);
        assert_eq!(a, database_name_for_topic(&format!("{}-a", "t".repeat(80))));
    }

    #[test]
    fn invalid_database_names_are_refused_with_a_reason() {
        assert!(check_database_name("").is_err());
        assert!(check_database_name("a.b").unwrap_err().contains("'.'"));
        assert!(check_database_name(&"d".repeat(64)).is_err());
        assert_eq!(check_database_name("kafka_workload-1"), Ok(()));
    }

    #[test]
    fn merged_results_add_counts_per_collection() {
        let part = |db: &str, written| MongoResult {
            database: db.into(),
            consumer: Some(MongoCollectionResult {
                collection: "consumer".into(),
                written,
                duplicates: 1,
                ..Default::default()
            }),
            producer: None,
        };
        let m = MongoResult::merged([&part("t", 5), &part("t", 7), &part("u", 1)])
            .unwrap()
            .unwrap();
        assert_eq!(m.database, "t,u");
        let c = m.consumer.unwrap();
        assert_eq!((c.written, c.duplicates), (13, 3));
        assert!(m.producer.is_none());
        assert_eq!(MongoResult::merged([]).unwrap(), None);
    }

    #[test]
    fn text_lines_name_each_collection_and_flag_unstored_records() {
        let m = MongoResult {
            database: "t".into(),
            producer: Some(MongoCollectionResult {
                collection: "producer".into(),
                written: 10,
                batches: 1,
                ..Default::default()
            }),
            consumer: Some(MongoCollectionResult {
                collection: "consumer".into(),
                written: 7,
                duplicates: 3,
                unstored: 2,
                ..Default::default()
            }),
        };
        let mut out = Vec::new();
        write_text(&mut out, &m).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("t.producer: 10 written, 0 duplicates"),
            "{text}"
        );
        assert!(
            text.contains("t.consumer: 7 written, 3 duplicates"),
            "{text}"
        );
        assert!(text.contains("2 NOT stored"), "{text}");
    }
}
