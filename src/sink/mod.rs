//! Optional sinks that record messages outside Kafka; today MongoDB.

/// The MongoDB database name for a topic: client.py used the topic itself, which breaks for names
/// MongoDB refuses. Characters MongoDB forbids in database names (`/\. "$*<>:|?`) become `_`, and
/// names are cut to 63 bytes.
pub fn database_name_for_topic(topic: &str) -> String {
    let mut name: String = topic
        .chars()
        .map(|c| {
            if "/\\. \"$*<>:|?\0".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    while name.len() > 63 {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_map_to_valid_database_names() {
        assert_eq!(database_name_for_topic("hot-topic"), "hot-topic");
        assert_eq!(database_name_for_topic("app.events/v1"), "app_events_v1");
        assert_eq!(database_name_for_topic(&"x".repeat(100)).len(), 63);
    }
}
