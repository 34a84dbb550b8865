//! Property tests for every parser of outside input: credential files (juju's YAML, relation
//! databags), `--assert` conditions, the result files `merge` reads, and the record values the
//! consumer decodes and the audit classifies. Each parser gets arbitrary bytes, documents it
//! accepts with damage done to them (fields of the wrong JSON type, truncation at any byte, binary
//! garbage, deep nesting, ~1 MB strings), and the round trips that exist. What must hold: no
//! panic, an `Ok` or a clean `Err`, and what each parser documents.
//!
//! `KW_PROPTEST_CASES` is the number of cases per parser group (default 100,000), shared out
//! between the group's properties by their cost; `KW_PROPTEST_CASES=1000000` is the long run.
//! A failure found here stays as a named regression test in its section. Brokers are left to
//! `tests/it`; the consumer loop is private to `kafka::consumer`, so its classification of a
//! record is restated here in [`payload::classify`].

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;

/// Cases per parser group.
fn group_cases() -> u32 {
    std::env::var("KW_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// A config that runs `fraction` of a group's cases. Failures are not written to
/// `proptest-regressions/`: they become named tests here.
fn share(fraction: f64) -> ProptestConfig {
    ProptestConfig {
        cases: ((f64::from(group_cases()) * fraction).ceil() as u32).max(1),
        failure_persistence: None,
        // Shrinking a 1 MB input may take long; a minute of it is plenty to read a failure.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// A private directory for files the parsers read: in memory when the machine has `/dev/shm`,
/// since a write and a read on disk cost 30 times as much.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory")
}

/// Damage done to a document, and hostile values to put into one.
mod hostile {
    use super::*;
    use serde_json::{json, Value};

    /// One change to a document's bytes.
    #[derive(Debug, Clone)]
    pub enum Damage {
        /// Cut it at a byte.
        Truncate(Index),
        /// XOR one byte with a non-zero mask.
        Flip(Index, u8),
        /// Insert bytes.
        Insert(Index, Vec<u8>),
        /// Remove up to this many bytes.
        Delete(Index, usize),
        /// Repeat a stretch of the document at another place.
        Repeat(Index, Index, usize),
    }

    pub fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            3 => any::<Index>().prop_map(Damage::Truncate),
            3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
            2 => (any::<Index>(), garbage(16)).prop_map(|(i, g)| Damage::Insert(i, g)),
            1 => (any::<Index>(), 1..32usize).prop_map(|(i, n)| Damage::Delete(i, n)),
            1 => (any::<Index>(), any::<Index>(), 1..64usize)
                .prop_map(|(from, to, n)| Damage::Repeat(from, to, n)),
        ]
    }

    /// One to three changes, applied in turn.
    pub fn damages() -> impl Strategy<Value = Vec<Damage>> {
        prop::collection::vec(damage(), 1..=3)
    }

    /// A position in `0..=len`.
    fn at(i: &Index, len: usize) -> usize {
        i.index(len + 1)
    }

    pub fn apply(doc: &[u8], damages: &[Damage]) -> Vec<u8> {
        let mut out = doc.to_vec();
        for d in damages {
            let len = out.len();
            match d {
                Damage::Truncate(i) => out.truncate(at(i, len).min(len.saturating_sub(1))),
                Damage::Flip(i, mask) if len > 0 => out[i.index(len)] ^= mask,
                Damage::Flip(..) => {}
                Damage::Insert(i, bytes) => {
                    let p = at(i, len);
                    out.splice(p..p, bytes.iter().copied());
                }
                Damage::Delete(i, n) => {
                    let p = at(i, len);
                    out.drain(p..(p + n).min(len));
                }
                Damage::Repeat(from, to, n) => {
                    let p = at(from, len);
                    let chunk = out[p..(p + n).min(len)].to_vec();
                    let q = at(to, len);
                    out.splice(q..q, chunk);
                }
            }
        }
        out
    }

    /// Bytes of any value, mostly short.
    pub fn garbage(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..=max)
    }

    /// `depth` levels of `open` around `inner`.
    pub fn nested(depth: usize, open: &str, inner: &str, close: &str) -> String {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    }

    /// A JSON value of any type, including the extremes of each and nesting past serde_json's
    /// recursion limit (128).
    pub fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop_oneof![
                Just(u64::MAX),
                Just(u64::MAX - 1),
                Just(1 << 63),
                any::<u64>()
            ]
            .prop_map(Value::from),
            prop_oneof![
                Just(1e308),
                Just(-1e308),
                Just(-0.0),
                Just(0.5),
                Just(f64::MIN_POSITIVE),
                any::<f64>(),
            ]
            // A NaN or an infinity becomes null.
            .prop_map(Value::from),
            ".{0,24}".prop_map(Value::from),
            Just(json!([])),
            Just(json!({})),
            Just(json!([[0, 1]])),
            Just(json!([[1, 0]])),
            Just(json!([[0, u64::MAX]])),
            Just(json!({"r": {"seen": [[0, u64::MAX]], "duplicates": 0, "out_of_order": 0}})),
            prop::collection::vec(any::<i32>().prop_map(Value::from), 0..4).prop_map(Value::from),
            (120..300usize)
                .prop_map(|depth| { (0..depth).fold(json!(1), |inner, _| json!([inner])) }),
        ]
    }

    fn node_count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(node_count).sum(),
            Value::Object(o) => o.values().map(node_count).sum(),
            _ => 0,
        }
    }

    /// Replaces one node of `doc`, chosen by `which` among all of them in pre-order, with `with`.
    pub fn replace_node(doc: &mut Value, which: &Index, with: Value) {
        let n = which.index(node_count(doc));
        replace_nth(doc, n, with);
    }

    fn replace_nth(v: &mut Value, mut n: usize, with: Value) {
        if n == 0 {
            *v = with;
            return;
        }
        n -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(a) => a.iter_mut().collect(),
            Value::Object(o) => o.values_mut().collect(),
            _ => Vec::new(),
        };
        for child in children {
            let size = node_count(child);
            if n < size {
                return replace_nth(child, n, with);
            }
            n -= size;
        }
    }
}

/// `juju run data-integrator/leader get-credentials` output and relation databags
/// (`kafka_workload::config::parse_credentials` and `load_credentials`).
mod credentials {
    use super::hostile::{apply, damages, garbage, nested};
    use super::*;
    use kafka_workload::config::{load_credentials, parse_credentials, Credentials};

    /// Someone's credentials, as a file would give them.
    #[derive(Debug, Clone)]
    struct Given {
        username: String,
        password: String,
        endpoints: String,
        /// The `tls` word as written, and what it means.
        tls: (String, bool),
        /// The PEM, when there is one.
        ca: Option<String>,
        topic: String,
        prefix: String,
        /// Keys the parser must ignore.
        extra: Vec<(String, String)>,
    }

    /// The layouts the parser reads.
    #[derive(Debug, Clone, Copy)]
    enum Layout {
        /// juju's YAML: a `kafka:` map, plain scalars where juju prints them plain.
        Juju,
        /// juju's YAML after the progress lines `juju run` prints first.
        JujuWithProgress,
        /// A relation databag as JSON.
        DatabagJson,
        /// A relation databag as YAML, every value double-quoted.
        DatabagYaml,
    }

    fn layout() -> impl Strategy<Value = Layout> {
        prop_oneof![
            Just(Layout::Juju),
            Just(Layout::JujuWithProgress),
            Just(Layout::DatabagJson),
            Just(Layout::DatabagYaml),
        ]
    }

    /// A secret long enough and random enough not to occur in an error message by chance.
    fn secret() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9]{15,40}"
    }

    /// Any printable ASCII with no space at either end: what a hand-written file may hold.
    fn printable() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,30}[!-~])?"
    }

    fn tls_word() -> impl Strategy<Value = (String, bool)> {
        let words = prop_oneof![
            Just(("enabled", true)),
            Just(("disabled", false)),
            Just(("true", true)),
            Just(("false", false)),
            Just(("yes", true)),
            Just(("no", false)),
        ];
        (words, any::<bool>(), " {0,2}").prop_map(|((w, on), upper, pad)| {
            let w = if upper {
                w.to_ascii_uppercase()
            } else {
                w.into()
            };
            (format!("{pad}{w}{pad}"), on)
        })
    }

    fn pem() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9+/]{64}", 1..4).prop_map(|lines| {
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
    }

    fn given(username: BoxedStrategy<String>) -> impl Strategy<Value = Given> {
        (
            username,
            secret(),
            prop::collection::vec(("[a-z0-9.-]{1,20}", 1..65535u16), 1..4),
            tls_word(),
            prop::option::of(pem()),
            "[a-zA-Z0-9._-]{1,40}",
            prop::collection::vec(("x-[a-z-]{1,10}", "[a-z0-9 ]{0,10}"), 0..3),
        )
            .prop_map(|(username, password, hosts, tls, ca, topic, extra)| Given {
                endpoints: hosts
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
                prefix: format!("{username}-"),
                username,
                password,
                tls,
                ca,
                topic,
                // The same key twice is a YAML error, not an ignored key.
                extra: extra
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, v))| (format!("{k}{i}"), v))
                    .collect(),
            })
    }

    /// A YAML scalar holding `s` exactly: plain where juju would print it plain, else quoted
    /// (a JSON string is a YAML double-quoted scalar).
    fn scalar(s: &str, plain_allowed: bool) -> String {
        let plain = plain_allowed
            && s.len() >= 8
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if plain {
            s.to_string()
        } else {
            serde_json::to_string(s).expect("a string serializes")
        }
    }

    fn write(g: &Given, layout: Layout) -> String {
        let mut fields: Vec<(String, String)> = vec![
            ("endpoints".into(), g.endpoints.clone()),
            ("username".into(), g.username.clone()),
            ("password".into(), g.password.clone()),
            ("tls".into(), g.tls.0.clone()),
            ("topic".into(), g.topic.clone()),
            ("consumer-group-prefix".into(), g.prefix.clone()),
        ];
        if let Some(ca) = &g.ca {
            fields.push(("tls-ca".into(), ca.clone()));
        }
        fields.extend(g.extra.iter().cloned());
        match layout {
            Layout::DatabagJson => {
                let map: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().map(|(k, v)| (k, v.into())).collect();
                serde_json::to_string_pretty(&map).expect("a map serializes")
            }
            Layout::DatabagYaml => fields
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", scalar(v, false)))
                .collect(),
            Layout::Juju | Layout::JujuWithProgress => {
                let mut out = String::new();
                if matches!(layout, Layout::JujuWithProgress) {
                    out.push_str("Running operation 1 with 1 task\n");
                    out.push_str("  - task 2 on unit-data-integrator-0\n\n");
                    out.push_str("Waiting for task 2...\n");
                }
                out.push_str("kafka:\n");
                for (k, v) in &fields {
                    if k == "tls-ca" {
                        // juju prints a multi-line value as a literal block.
                        out.push_str("  tls-ca: |\n");
                        for line in v.lines() {
                            out.push_str(&format!("    {line}\n"));
                        }
                    } else {
                        out.push_str(&format!("  {k}: {}\n", scalar(v, true)));
                    }
                }
                out.push_str("ok: \"True\"\n");
                out
            }
        }
    }

    /// What every successful parse guarantees, whatever the input.
    fn check_parsed(c: &Credentials) -> Result<(), TestCaseError> {
        for field in [
            &c.endpoints,
            &c.username,
            &c.topic,
            &c.consumer_group_prefix,
        ] {
            prop_assert!(field.as_ref().is_none_or(|v| !v.trim().is_empty()));
        }
        prop_assert!(c
            .password
            .as_ref()
            .is_none_or(|p| !p.expose().trim().is_empty()));
        prop_assert!(c
            .tls_ca
            .as_ref()
            .is_none_or(|ca| ca.expose().contains("-----BEGIN")));
        Ok(())
    }

    /// Parses `text`; an error or a `Debug` of the result must not show `secrets`.
    fn parse_keeping(text: &str, secrets: &[&str]) -> Result<(), TestCaseError> {
        match parse_credentials(text) {
            Ok(c) => {
                check_parsed(&c)?;
                // Damage may move a secret's text into a field that is not secret.
                let plain = format!(
                    "{:?}",
                    (
                        &c.endpoints,
                        &c.username,
                        &c.topic,
                        &c.consumer_group_prefix
                    )
                );
                let shown = format!("{c:?}");
                for s in secrets.iter().filter(|s| !plain.contains(*s)) {
                    prop_assert!(!shown.contains(s), "{shown}");
                }
            }
            Err(e) => {
                for s in secrets {
                    prop_assert!(!e.contains(s), "the error shows a secret: {e}");
                }
            }
        }
        Ok(())
    }

    /// A password value that is no plain string: YAML of every other kind, and broken YAML,
    /// around the secret.
    fn wrong_password(pw: &str, shape: &Index) -> String {
        let shapes = [
            format!("[{pw}]"),
            format!("{{a: {pw}}}"),
            format!("{{{pw}: 1}}"),
            format!("{{{pw}: 1, {pw}: 2}}"),
            format!("\n    {pw}: 1\n    {pw}: 2"),
            format!("\n    - {pw}"),
            format!("!!int {pw}"),
            format!("!!binary {pw}"),
            format!("!!bool {pw}"),
            format!("!!float {pw}"),
            format!("!!map {pw}"),
            format!("!custom {pw}"),
            format!("*{pw}"),
            format!("&{pw} [1]"),
            format!("\"{pw}"),
            format!("'{pw}"),
            format!("\"\\x{pw}\""),
            format!("\"\\u{pw}\""),
            format!("{pw}: {pw}"),
            format!("? {pw}"),
            format!("|\n{pw}"),
            format!("{pw}\n  {pw}: x"),
            format!("%{pw}"),
            format!("@{pw}"),
            format!("`{pw}`"),
            format!("{{{pw}"),
            format!("[{pw}"),
            format!("\t{pw}"),
            format!("{pw}\0"),
            format!("<<: {pw}"),
        ];
        shapes[shape.index(shapes.len())].clone()
    }

    fn usernames() -> BoxedStrategy<String> {
        prop_oneof![
            "relation-[0-9]{1,4}".prop_map(String::from),
            printable(),
            "[^\u{0}-\u{1f}\u{7f}-\u{9f}\u{feff}\u{fffe}\u{ffff}\u{2028}\u{2029}]{1,12}"
                .prop_filter("not blank", |s| !s.trim().is_empty()),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(share(0.3))]

        #[test]
        fn any_text_parses_or_fails_cleanly(text in any::<String>()) {
            parse_keeping(&text, &[])?;
        }
    }

    proptest! {
        #![proptest_config(share(0.3))]

        #[test]
        fn any_bytes_read_as_text_parse_or_fail_cleanly(bytes in garbage(256)) {
            parse_keeping(&String::from_utf8_lossy(&bytes), &[])?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn credentials_written_in_any_layout_parse_back_to_themselves(
            g in given(usernames()),
            layout in layout(),
        ) {
            let text = write(&g, layout);
            let c = parse_credentials(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(c.username.as_deref(), Some(g.username.as_str()), "{}", text);
            prop_assert_eq!(c.password.as_ref().map(|p| p.expose()), Some(g.password.as_str()));
            prop_assert_eq!(c.endpoints.as_deref(), Some(g.endpoints.as_str()));
            prop_assert_eq!(c.tls, Some(g.tls.1));
            prop_assert_eq!(c.tls_ca.as_ref().map(|p| p.expose()), g.ca.as_deref());
            prop_assert_eq!(c.topic.as_deref(), Some(g.topic.as_str()));
            prop_assert_eq!(c.consumer_group_prefix.as_deref(), Some(g.prefix.as_str()));
            let shown = format!("{c:?}");
            prop_assert!(!shown.contains(&g.password), "{}", shown);
        }
    }

    proptest! {
        #![proptest_config(share(0.15))]

        #[test]
        fn damaged_credentials_never_panic_nor_show_their_secrets(
            g in given(usernames()),
            layout in layout(),
            damage in damages(),
        ) {
            let text = write(&g, layout);
            let damaged = String::from_utf8_lossy(&apply(text.as_bytes(), &damage)).into_owned();
            let body = g.ca.as_deref().map(|ca| ca.lines().nth(1).unwrap_or_default());
            let mut secrets = vec![g.password.as_str()];
            secrets.extend(body);
            parse_keeping(&damaged, &secrets)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.05))]

        #[test]
        fn a_password_of_another_yaml_kind_never_shows_in_the_error(
            g in given("relation-[0-9]{1,4}".prop_map(String::from).boxed()),
            juju in any::<bool>(),
            shape in any::<Index>(),
        ) {
            let layout = if juju { Layout::Juju } else { Layout::DatabagYaml };
            let pw = &g.password;
            let written = write(&g, layout);
            let text = written.replacen(
                &format!("password: {}", scalar(pw, juju)),
                &format!("password: {}", wrong_password(pw, &shape)),
                1,
            );
            prop_assert_ne!(&text, &written);
            parse_keeping(&text, &[pw])?;
        }
    }

    proptest! {
        #![proptest_config(share(0.05))]

        #[test]
        fn json_databag_with_fields_of_the_wrong_type_never_panics(
            g in given(usernames()),
            which in any::<Index>(),
            with in super::hostile::json_value(),
        ) {
            let mut doc: serde_json::Value = serde_json::from_str(&write(&g, Layout::DatabagJson)).expect("JSON");
            super::hostile::replace_node(&mut doc, &which, with);
            let text = serde_json::to_string(&doc).expect("a value serializes");
            parse_keeping(&text, &[&g.password])?;
        }
    }

    proptest! {
        #![proptest_config(share(0.0495))]

        #[test]
        fn a_credentials_file_with_any_bytes_loads_or_names_the_file(
            g in given(usernames()),
            layout in layout(),
            damage in prop::collection::vec(super::hostile::damage(), 0..=3),
        ) {
            thread_local! {
                static DIR: tempfile::TempDir = scratch_dir();
            }
            let path = DIR.with(|d| d.path().join("credentials.yaml"));
            std::fs::write(&path, apply(write(&g, layout).as_bytes(), &damage)).expect("written");
            match load_credentials(&path) {
                Ok(c) => check_parsed(&c)?,
                Err(e) => {
                    let shown = format!("{e}");
                    prop_assert!(shown.contains(&path.display().to_string()), "{}", shown);
                    prop_assert!(!shown.contains(&g.password), "{}", shown);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(share(0.0005))]

        #[test]
        fn deep_huge_and_binary_documents_fail_cleanly(
            g in given("relation-[0-9]{1,4}".prop_map(String::from).boxed()),
            kind in 0..6usize,
            depth in prop_oneof![120..1_100usize, 1_000..200_000usize],
            filler in any::<u8>(),
        ) {
            let pw = g.password.clone();
            let text = match kind {
                0 => format!("kafka:\n  password: {pw}\n  username: {}", nested(depth, "[", "1", "]")),
                1 => format!("{{\"password\": \"{pw}\", \"x\": {}}}", nested(depth, "{\"a\": ", "1", "}")),
                2 => format!("kafka:\n  password: {pw}\n  username: {}\n", "u".repeat(1 << 20)),
                3 => format!("kafka:\n  password: \"{pw}{}\"\n", "\\u00e9".repeat(1 << 18)),
                4 => String::from_utf8_lossy(&vec![filler; 1 << 20]).into_owned(),
                _ => nested(depth, "- ", &pw, "\n"),
            };
            parse_keeping(&text, &[&pw])?;
        }
    }

    #[test]
    fn a_password_tagged_as_another_type_is_refused_without_showing_it() {
        // serde quoted the string it could not use in double quotes, which were not removed.
        let err = parse_credentials("kafka:\n  password: !!bool aaAAAaAaaAa0AA0a\n").unwrap_err();
        assert!(!err.contains("aaAAAaAaaAa0AA0a"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = parse_credentials("password: !!int \"hunter2 \\\" hunter2\"\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_secret_used_twice_as_a_key_is_not_shown() {
        let err = parse_credentials("kafka:\n  password: {hunter2: 1, hunter2: 2}\n").unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_megabyte_of_open_brackets_is_refused_at_once() {
        // libyaml's scanner is quadratic in the nesting depth: this took some 25 minutes.
        let started = std::time::Instant::now();
        let err = parse_credentials(&format!(
            "password: hunter2hunter2\nx: {}",
            "[".repeat(1 << 20)
        ))
        .unwrap_err();
        assert!(err.contains("nest"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Nesting that serde_yaml refuses by itself still gets its error, with a position.
        let err =
            parse_credentials(&format!("x: {}1{}", "[".repeat(500), "]".repeat(500))).unwrap_err();
        assert!(err.contains("recursion limit"), "{err}");
    }

    #[test]
    fn yaml_aliases_that_multiply_are_refused() {
        // A "billion laughs" document: each alias level repeats the one below it ten times.
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = (b'a' + level - 1) as char;
            let this = (b'a' + level) as char;
            let refs = vec![format!("*{prev}"); 10].join(", ");
            text.push_str(&format!("{this}: &{this} [{refs}]\n"));
        }
        text.push_str("password: hunter2hunter2\n");
        assert!(parse_credentials(&text).is_err());
    }
}

/// `--assert` conditions (`kafka_workload::report::assert`).
mod assert {
    use super::hostile::{apply, damages, garbage};
    use super::*;
    use kafka_workload::report::assert::{
        evaluate_all, failures, parse_all, write_checks, Condition, Count, Metric, Op, RateOf,
        Source, Stat,
    };
    use kafka_workload::report::result::RunResult;

    /// A name the grammar knows, with what it means.
    fn metric() -> impl Strategy<Value = (String, Metric)> {
        let sources = prop_oneof![
            Just(("", Source::Auto)),
            Just(("ack_", Source::Ack)),
            Just(("ack_uncorrected_", Source::AckUncorrected)),
            Just(("e2e_", Source::E2e)),
            Just(("e2e_wall_", Source::E2eWall)),
        ];
        let stats = prop_oneof![
            Just(("p50", Stat::P50)),
            Just(("p90", Stat::P90)),
            Just(("p99", Stat::P99)),
            Just(("p999", Stat::P999)),
            Just(("p99.9", Stat::P999)),
            Just(("max", Stat::Max)),
            Just(("mean", Stat::Mean)),
        ];
        let latency = (sources, stats)
            .prop_map(|((src, s), (st, t))| (format!("{src}{st}"), Metric::Latency(s, t)));
        let rate = prop_oneof![
            Just(("rate", RateOf::Auto)),
            Just(("producer_rate", RateOf::Producer)),
            Just(("consumer_rate", RateOf::Consumer)),
        ]
        .prop_map(|(n, r)| (n.to_string(), Metric::Rate(r)));
        let count = prop_oneof![
            Just(("sent", Count::Sent)),
            Just(("acked", Count::Acked)),
            Just(("failed", Count::Failed)),
            Just(("records", Count::Records)),
            Just(("distinct", Count::Distinct)),
            Just(("lost", Count::Lost)),
            Just(("duplicates", Count::Duplicates)),
            Just(("out_of_order", Count::OutOfOrder)),
            Just(("foreign", Count::Foreign)),
        ]
        .prop_map(|(n, c)| (n.to_string(), Metric::Count(c)));
        (prop_oneof![latency, rate, count], any::<u64>()).prop_map(|((name, m), case)| {
            // Names are case-insensitive: upper-case the letters whose bit is set.
            let name = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            (name, m)
        })
    }

    fn op() -> impl Strategy<Value = (&'static str, Op)> {
        prop_oneof![
            Just(("<", Op::Lt)),
            Just(("<=", Op::Le)),
            Just((">", Op::Gt)),
            Just((">=", Op::Ge)),
            Just(("==", Op::Eq)),
            Just(("!=", Op::Ne)),
        ]
    }

    /// A number as it may be typed: digits with `_` separators, maybe a fraction.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,6}",
            "[0-9]{1,3}(_[0-9]{3}){1,3}",
            "[0-9]{1,4}\\.[0-9]{1,4}",
            "\\.[0-9]{1,3}",
            "[0-9]{1,3}\\.",
            "[0-9]{20,40}",
        ]
    }

    fn unit_for(m: Metric) -> BoxedStrategy<(String, f64)> {
        match m {
            Metric::Latency(..) => prop_oneof![
                Just(("us", 1.0)),
                Just(("US", 1.0)),
                Just(("µs", 1.0)),
                Just(("µS", 1.0)),
                Just(("ms", 1e3)),
                Just(("Ms", 1e3)),
                Just(("s", 1e6)),
                Just(("S", 1e6)),
            ]
            .prop_map(|(u, scale)| (u.to_string(), scale))
            .boxed(),
            _ => Just((String::new(), 1.0)).boxed(),
        }
    }

    /// A valid condition as typed, and what it must parse to.
    fn condition() -> impl Strategy<Value = (String, Metric, Op, f64)> {
        (
            metric(),
            op(),
            number(),
            "[ \t]{0,2}",
            "[ \t]{0,2}",
            "[ \t]{0,2}",
        )
            .prop_flat_map(|((name, m), (sym, op), num, s1, s2, s3)| {
                unit_for(m).prop_map(move |(unit, scale)| {
                    let text = format!("{s1}{name}{s2}{sym}{s3}{num}{s2}{unit}{s1}");
                    let value: f64 = num.replace('_', "").parse().expect("a number");
                    (text, m, op, value * scale)
                })
            })
    }

    /// Text made of the grammar's own pieces, in any order: gets further into the parser than
    /// random characters do.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("p99"),
            Just("p99.9"),
            Just("ack_"),
            Just("e2e_wall_"),
            Just("_"),
            Just("rate"),
            Just("lost"),
            Just("<"),
            Just("<="),
            Just(">"),
            Just("="),
            Just("=="),
            Just("!"),
            Just("!="),
            Just("0"),
            Just("9"),
            Just("."),
            Just("_000"),
            Just("ms"),
            Just("µs"),
            Just("s"),
            Just(" "),
            Just("\t"),
            Just("é"),
            Just("\u{0}"),
            Just("€"),
            Just("e5"),
            Just("-"),
            Just("+"),
            Just("inf"),
            Just("NaN"),
            Just("💥"),
        ];
        prop::collection::vec(token, 0..12).prop_map(|t| t.concat())
    }

    /// What every parse guarantees.
    fn check_parsed(text: &str, c: &Condition) -> Result<(), TestCaseError> {
        prop_assert_eq!(c.text.as_str(), text.trim());
        prop_assert!(!c.threshold.is_nan());
        // Nothing was measured in an empty result, and an unmeasured condition fails.
        let checks = evaluate_all(std::slice::from_ref(c), &RunResult::default());
        prop_assert!(checks.iter().all(|k| k.value.is_none() && !k.passed));
        prop_assert!(failures(&checks).is_some());
        let mut out = Vec::new();
        write_checks(&mut out, &checks).expect("writing to memory");
        Ok(())
    }

    fn parse_any(text: &str) -> Result<(), TestCaseError> {
        match Condition::parse(text) {
            Ok(c) => check_parsed(text, &c)?,
            Err(e) => prop_assert!(!e.is_empty()),
        }
        // parse_all names the flag and the condition in its error.
        if let Err(e) = parse_all(&[text.to_string()]) {
            prop_assert!(e.to_string().starts_with("invalid --assert: `"), "{}", e);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(share(0.3))]

        #[test]
        fn any_text_parses_or_says_what_is_wrong(text in any::<String>()) {
            parse_any(&text)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.3))]

        #[test]
        fn any_arrangement_of_the_grammars_tokens_parses_or_says_what_is_wrong(text in token_soup()) {
            parse_any(&text)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.2))]

        #[test]
        fn every_condition_the_grammar_allows_parses_to_what_it_says(
            (text, metric, op, threshold) in condition(),
        ) {
            let c = Condition::parse(&text).map_err(|e| TestCaseError::fail(format!("`{text}`: {e}")))?;
            prop_assert_eq!(c.metric, metric);
            prop_assert_eq!(c.op, op);
            prop_assert_eq!(c.threshold, threshold);
            check_parsed(&text, &c)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn damaged_conditions_parse_or_say_what_is_wrong(
            (text, ..) in condition(),
            damage in damages(),
        ) {
            parse_any(&String::from_utf8_lossy(&apply(text.as_bytes(), &damage)))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.0995))]

        #[test]
        fn conditions_with_binary_garbage_parse_or_say_what_is_wrong(
            (text, ..) in condition(),
            junk in garbage(16),
            at in any::<Index>(),
        ) {
            let mut bytes = text.into_bytes();
            let p = at.index(bytes.len() + 1);
            bytes.splice(p..p, junk);
            parse_any(&String::from_utf8_lossy(&bytes))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.0005))]

        #[test]
        fn megabyte_conditions_parse_or_say_what_is_wrong(kind in 0..5usize, digit in 0..10u8) {
            let mb = 1 << 20;
            let d = char::from(b'0' + digit);
            let text = match kind {
                0 => format!("p99<{}ms", d.to_string().repeat(mb)),
                1 => format!("lost=={}", format!("{d}_").repeat(mb / 2)),
                2 => format!("{}<1ms", "p".repeat(mb)),
                3 => format!("rate>1{}", " ".repeat(mb)),
                _ => "<".repeat(mb),
            };
            parse_any(&text)?;
        }
    }

    #[test]
    fn a_threshold_too_large_for_a_float_is_infinite_not_a_panic() {
        let c = Condition::parse(&format!("p99<{}s", "9".repeat(400))).unwrap();
        assert_eq!(c.threshold, f64::INFINITY);
    }
}

/// The result files `kafka-workload merge` reads (`kafka_workload::report::merge`).
mod merge {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use super::hostile::{apply, damages, garbage, json_value, nested, replace_node};
    use super::*;
    use kafka_workload::report::merge::{merge, merge_files, read_result};
    use kafka_workload::report::result::{
        AuditResult, ConsumerResult, Latency, ProducerResult, RunResult, Span, Throughput, SCHEMA,
    };
    use kafka_workload::report::stats::{latency_histogram, record_latency, MAX_LATENCY_US};
    use kafka_workload::report::summary::{write_json, write_text};
    use kafka_workload::workload::audit::{Audit, RangeSet};

    /// A few latency summaries with their histograms, made once: encoding a histogram per case
    /// would cost more than everything else a case does.
    fn latencies() -> &'static [Latency] {
        static POOL: OnceLock<Vec<Latency>> = OnceLock::new();
        POOL.get_or_init(|| {
            let sets: [&[u64]; 5] = [
                &[],
                &[1],
                &[250, 1_000, 1_000, 4_000, 90_000],
                &[1, MAX_LATENCY_US, MAX_LATENCY_US + 1, u64::MAX],
                &[7; 1000],
            ];
            sets.iter()
                .map(|values| {
                    let mut h = latency_histogram();
                    for &v in *values {
                        record_latency(&mut h, v);
                    }
                    Latency::from_histogram(&h)
                })
                .collect()
        })
    }

    fn latency() -> impl Strategy<Value = Latency> {
        any::<Index>().prop_map(|i| latencies()[i.index(latencies().len())].clone())
    }

    fn span() -> impl Strategy<Value = Option<Span>> {
        prop::option::of((
            1_700_000_000_000_000..1_700_000_100_000_000u64,
            0..60_000_000u64,
        ))
        .prop_map(|s| {
            s.map(|(start, len)| Span {
                start_unix_us: start,
                end_unix_us: start + len,
            })
        })
    }

    fn producer() -> impl Strategy<Value = ProducerResult> {
        (
            (
                0..1_000_000u64,
                0..1_000_000u64,
                0..1000u64,
                0..100_000_000u64,
            ),
            span(),
            latency(),
            latency(),
            prop::collection::btree_map("[A-Za-z]{1,12}", 1..100u64, 0..3),
        )
            .prop_map(
                |((sent, acked, failed, bytes), window, ack, uncorrected, errors)| ProducerResult {
                    sent,
                    acked,
                    failed,
                    bytes,
                    window,
                    throughput: Throughput::new(
                        acked,
                        bytes,
                        window.map_or(Default::default(), |w| w.duration()),
                    ),
                    ack_latency: ack,
                    ack_latency_uncorrected: uncorrected,
                    errors,
                    ..Default::default()
                },
            )
    }

    /// Records of runs `r0`..`r2` (sequence numbers, partitions) and foreign records.
    fn consumer() -> impl Strategy<Value = ConsumerResult> {
        (
            prop::collection::vec((0..3usize, 0..200u64, 0..4i32), 0..40),
            (0..5u64, 0..3u64),
            prop::option::of(0..300u64),
            span(),
            (latency(), latency()),
            "[a-z0-9-]{1,12}",
            prop::option::of("[a-z ]{1,20}"),
        )
            .prop_map(
                |(records, (foreign, not_json), expected, window, (e2e, wall), group, stop)| {
                    let mut audit = Audit::default();
                    for &(run, seq, partition) in &records {
                        audit.record(&format!("r{run}"), partition, seq);
                    }
                    for _ in 0..foreign + not_json {
                        audit.record_foreign();
                    }
                    let n = records.len() as u64 + foreign + not_json;
                    ConsumerResult {
                        group_id: group,
                        records: n,
                        bytes: n * 100,
                        window,
                        throughput: Throughput::new(
                            n,
                            n * 100,
                            window.map_or(Default::default(), |w| w.duration()),
                        ),
                        e2e_latency: e2e,
                        e2e_latency_wall: wall,
                        stop_reason: stop,
                        audit: AuditResult::from_audit(&audit, not_json, expected),
                        ..Default::default()
                    }
                },
            )
    }

    /// A result as one run of kafka-workload writes it.
    fn result() -> impl Strategy<Value = RunResult> {
        (
            "[0-9a-f]{16}",
            "[a-zA-Z0-9._-]{1,30}",
            prop::option::of(producer()),
            prop::option::of(consumer()),
            any::<bool>(),
        )
            .prop_map(
                |(run_id, topic, producer, consumer, mock_cluster)| RunResult {
                    schema: SCHEMA.into(),
                    version: "0.1.0".into(),
                    run_id,
                    topic,
                    mock_cluster,
                    producer,
                    consumer,
                    ..Default::default()
                },
            )
    }

    fn json(r: &RunResult) -> Vec<u8> {
        let mut out = Vec::new();
        write_json(&mut out, r).expect("writing to memory");
        out
    }

    thread_local! {
        static DIR: tempfile::TempDir = scratch_dir();
    }

    /// Writes `bytes` to this thread's file number `n` and returns its path.
    fn file(n: usize, bytes: &[u8]) -> PathBuf {
        let path = DIR.with(|d| d.path().join(format!("result-{n}.json")));
        std::fs::write(&path, bytes).expect("written");
        path
    }

    /// Reads `bytes` as a result file and, when that works, merges it alone and with itself and
    /// prints the merge: none of it may panic, and an error must name the file.
    fn read_and_merge(bytes: &[u8]) -> Result<(), TestCaseError> {
        let path = file(0, bytes);
        let r = match read_result(&path) {
            Ok(r) => r,
            Err(e) => {
                let shown = format!("{e:#}");
                prop_assert!(shown.contains(&path.display().to_string()), "{}", shown);
                return Ok(());
            }
        };
        for inputs in [vec![r.clone()], vec![r.clone(), r]] {
            if let Ok(merged) = merge(&inputs) {
                let mut out = Vec::new();
                write_text(&mut out, &merged).expect("writing to memory");
                write_json(&mut out, &merged).expect("writing to memory");
            }
        }
        Ok(())
    }

    /// The sequence numbers per run, and how many of our records there were, by counting the
    /// audit's ranges back out: what a merge must add up to.
    fn seen(results: &[RunResult]) -> (BTreeMap<String, BTreeSet<u64>>, u64) {
        let mut runs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut ours = 0;
        for c in results.iter().filter_map(|r| r.consumer.as_ref()) {
            for (id, run) in &c.audit.runs {
                let set = runs.entry(id.clone()).or_default();
                for (s, e) in run.seen.ranges() {
                    set.extend(s..e);
                }
                ours += run.seen.len() + run.duplicates;
            }
        }
        (runs, ours)
    }

    proptest! {
        #![proptest_config(share(0.35))]

        #[test]
        fn any_bytes_are_read_as_a_result_or_refused_naming_the_file(bytes in garbage(512)) {
            read_and_merge(&bytes)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.05))]

        #[test]
        fn a_result_reads_back_as_written_and_merges_into_itself(r in result()) {
            let path = file(0, &json(&r));
            let back = read_result(&path).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            prop_assert_eq!(&back, &r);
            let m = merge(std::slice::from_ref(&back)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            prop_assert_eq!(&m.merged_from, &vec![r.run_id.clone()]);
            if let (Some(a), Some(b)) = (&m.producer, &r.producer) {
                prop_assert_eq!((a.sent, a.acked, a.failed, a.bytes), (b.sent, b.acked, b.failed, b.bytes));
                prop_assert_eq!(&a.ack_latency, &b.ack_latency);
                prop_assert_eq!(&a.errors, &b.errors);
            }
            if let (Some(a), Some(b)) = (&m.consumer, &r.consumer) {
                prop_assert_eq!((a.records, a.bytes), (b.records, b.bytes));
                prop_assert_eq!(&a.audit, &b.audit);
                prop_assert_eq!(&a.e2e_latency, &b.e2e_latency);
            }
        }
    }

    proptest! {
        #![proptest_config(share(0.0495))]

        #[test]
        fn a_fleet_merges_to_the_sums_and_the_union_of_what_it_saw(
            fleet in prop::collection::vec(result(), 2..=3),
        ) {
            let paths: Vec<PathBuf> = fleet.iter().enumerate().map(|(i, r)| file(i, &json(r))).collect();
            let m = merge_files(&paths).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            let producers: Vec<&ProducerResult> = fleet.iter().filter_map(|r| r.producer.as_ref()).collect();
            prop_assert_eq!(m.producer.is_some(), !producers.is_empty());
            if let Some(p) = &m.producer {
                prop_assert_eq!(p.sent, producers.iter().map(|p| p.sent).sum::<u64>());
                prop_assert_eq!(p.acked, producers.iter().map(|p| p.acked).sum::<u64>());
                prop_assert_eq!(p.ack_latency.count, producers.iter().map(|p| p.ack_latency.count).sum::<u64>());
            }
            let consumers: Vec<&ConsumerResult> = fleet.iter().filter_map(|r| r.consumer.as_ref()).collect();
            prop_assert_eq!(m.consumer.is_some(), !consumers.is_empty());
            if let Some(c) = &m.consumer {
                let (runs, _) = seen(&fleet);
                let distinct: u64 = runs.values().map(|s| s.len() as u64).sum();
                prop_assert_eq!(c.records, consumers.iter().map(|c| c.records).sum::<u64>());
                prop_assert_eq!(c.audit.distinct, distinct);
                // Within a consumer group what two members both read is a duplicate; between
                // groups (each reads everything) it is not, and foreign records are the same
                // ones again: the largest group's count stands.
                let mut groups: BTreeMap<&str, Vec<RunResult>> = BTreeMap::new();
                for r in fleet.iter().filter(|r| r.consumer.is_some()) {
                    groups.entry(r.consumer.as_ref().unwrap().group_id.as_str()).or_default().push(r.clone());
                }
                let mut duplicates = 0;
                let mut foreign = 0;
                for members in groups.values() {
                    let (runs, ours) = seen(members);
                    duplicates += ours - runs.values().map(|s| s.len() as u64).sum::<u64>();
                    foreign = foreign.max(members.iter().map(|r| r.consumer.as_ref().unwrap().audit.foreign).sum::<u64>());
                }
                prop_assert_eq!(c.audit.duplicates, duplicates);
                prop_assert_eq!(c.audit.foreign, foreign);
                let gaps: u64 = runs.values().map(|s| s.last().map_or(0, |m| m + 1 - s.len() as u64)).sum();
                let expected = consumers.iter().filter_map(|c| c.audit.expected).reduce(|a, b| a + b);
                prop_assert_eq!(c.audit.expected, expected);
                prop_assert_eq!(c.audit.lost, gaps.max(expected.map_or(0, |e| e.saturating_sub(distinct))));
            }
            prop_assert_eq!(m.merged_from, fleet.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>());
        }
    }

    proptest! {
        #![proptest_config(share(0.2))]

        #[test]
        fn damaged_result_files_are_read_or_refused(r in result(), damage in damages()) {
            read_and_merge(&apply(&json(&r), &damage))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn result_files_with_fields_of_the_wrong_type_are_read_or_refused(
            r in result(),
            which in any::<Index>(),
            with in json_value(),
        ) {
            let mut doc = serde_json::to_value(&r).expect("a result serializes");
            replace_node(&mut doc, &which, with);
            read_and_merge(&serde_json::to_vec(&doc).expect("a value serializes"))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.05))]

        #[test]
        fn hostile_histograms_are_read_or_refused(
            r in result(),
            histogram in histogram(),
        ) {
            let mut doc = serde_json::to_value(&r).expect("a result serializes");
            for side in ["producer", "consumer"] {
                if let Some(s) = doc.get_mut(side).and_then(|s| s.as_object_mut()) {
                    for (_, l) in s.iter_mut().filter(|(_, l)| l.get("histogram").is_some()) {
                        l["histogram"] = histogram.clone().into();
                    }
                }
            }
            read_and_merge(&serde_json::to_vec(&doc).expect("a value serializes"))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.2))]

        #[test]
        fn range_sets_read_from_any_pairs_are_disjoint_sorted_and_counted(
            pairs in prop::collection::vec((any::<u64>(), any::<u64>()), 0..8),
            small in prop::collection::vec((0..40u64, 0..40u64), 0..8),
        ) {
            for pairs in [pairs, small] {
                let text = serde_json::to_string(&pairs.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>()).expect("JSON");
                let Ok(set) = serde_json::from_str::<RangeSet>(&text) else {
                    prop_assert!(pairs.iter().any(|(a, b)| a > b));
                    continue;
                };
                let ranges: Vec<(u64, u64)> = set.ranges().collect();
                prop_assert!(ranges.iter().all(|(s, e)| s < e));
                prop_assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", ranges);
                prop_assert_eq!(set.len(), ranges.iter().map(|(s, e)| e - s).sum::<u64>());
                for &(a, b) in &pairs {
                    prop_assert_eq!(set.count_within(a, b), b - a);
                }
                let again: RangeSet = serde_json::from_str(&serde_json::to_string(&set).expect("JSON")).expect("its own output");
                prop_assert_eq!(again, set);
            }
        }
    }

    proptest! {
        #![proptest_config(share(0.0005))]

        #[test]
        fn deep_huge_and_binary_result_files_are_refused_or_read(
            r in result(),
            kind in 0..5usize,
            depth in 1_000..100_000usize,
            filler in any::<u8>(),
        ) {
            let mut doc = serde_json::to_value(&r).expect("a result serializes");
            let bytes = match kind {
                0 => {
                    doc["topic"] = "t".repeat(1 << 20).into();
                    serde_json::to_vec(&doc).expect("JSON")
                }
                1 => {
                    doc["run_id"] = "\u{e9}".repeat(1 << 19).into();
                    serde_json::to_vec(&doc).expect("JSON")
                }
                2 => {
                    let text = serde_json::to_string(&doc).expect("JSON");
                    text.replacen("\"topic\":", &format!("\"x\": {}, \"topic\":", nested(depth, "[", "", "]")), 1).into_bytes()
                }
                3 => vec![filler; 1 << 20],
                _ => {
                    let text = serde_json::to_string(&doc).expect("JSON");
                    text.replacen("\"histogram\":\"", &format!("\"histogram\":\"{}", "A".repeat(1 << 20)), 1).into_bytes()
                }
            };
            read_and_merge(&bytes)?;
        }
    }

    /// A histogram field as a hostile file may have it: not base64, a valid one truncated, or an
    /// uncompressed V2 header with any parameters.
    fn histogram() -> impl Strategy<Value = String> {
        use base64::Engine as _;
        let valid = latencies()[2].histogram.clone();
        prop_oneof![
            ".{0,40}",
            "[A-Za-z0-9+/]{0,80}={0,2}",
            (any::<Index>()).prop_map(move |i| valid[..i.index(valid.len())].to_string()),
            (
                0..40u32,
                any::<u64>(),
                any::<u64>(),
                prop_oneof![Just(1.0), any::<f64>()],
                garbage(64)
            )
                .prop_map(|(digits, low, high, ratio, payload)| {
                    let mut b = Vec::new();
                    b.extend_from_slice(&0x1c84_9313u32.to_be_bytes());
                    // The payload length is what the payload is: a larger one would make the
                    // reader allocate it (up to 4 GiB) before finding out; see
                    // a_histogram_header_claiming_4_gib_is_allocated_before_it_is_refused.
                    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    b.extend_from_slice(&0u32.to_be_bytes());
                    b.extend_from_slice(&digits.to_be_bytes());
                    b.extend_from_slice(&low.min(high).to_be_bytes());
                    b.extend_from_slice(&high.to_be_bytes());
                    b.extend_from_slice(&ratio.to_be_bytes());
                    b.extend_from_slice(&payload);
                    base64::engine::general_purpose::STANDARD.encode(b)
                }),
        ]
    }
}

/// Record values: what [`MessageWriter`] writes, what [`decode`] reads from any record, and how
/// the consumer counts it in the audit.
mod payload {
    use serde_json::{json, Value};

    use super::hostile::{apply, damages, garbage, json_value, nested};
    use super::*;
    use kafka_workload::workload::audit::Audit;
    use kafka_workload::workload::message::{decode, Decoded, Fields, MessageWriter};

    /// What the consumer loop does with a record's value (`kafka::consumer`'s `process`, which
    /// is private): ours is recorded under its run and sequence number, anything else is
    /// foreign, and `not_json` too when it is not a JSON object. Returns what was recorded.
    fn classify(
        value: &[u8],
        partition: i32,
        audit: &mut Audit,
        not_json: &mut u64,
    ) -> Option<(String, u64)> {
        match decode(value) {
            Decoded::Ours(f) => {
                let run = f.run_id.expect("ours has a run id");
                let seq = f.seq.expect("ours has a seq");
                audit.record(run, partition, seq);
                Some((run.to_string(), seq))
            }
            Decoded::ForeignJson(_) => {
                audit.record_foreign();
                None
            }
            Decoded::NotJson => {
                audit.record_foreign();
                *not_json += 1;
                None
            }
        }
    }

    /// Whether `value` is one JSON object. serde_json's `Value` would refuse one nested deeper
    /// than 128 levels; skipping over it has no such limit.
    fn is_object(value: &[u8]) -> bool {
        value.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok()
    }

    /// Whether `value` ends the way the writer ends a message of `run` and `seq`: what the
    /// fast path reads, leaving origin and content unparsed (`decode_written`'s documentation).
    fn has_our_tail(value: &[u8], run: &str, seq: u64) -> bool {
        let tail = format!("\", \"run_id\": \"{run}\", \"seq\": {seq}, \"sent_ns\": ");
        value.starts_with(b"{\"timestamp\": ")
            && value.ends_with(b"}")
            && value.windows(tail.len()).any(|w| w == tail.as_bytes())
    }

    /// What must hold for any value: decoding agrees with a JSON parser about what the value
    /// is, and the audit counts it exactly once, as ours or as foreign.
    fn check_any(value: &[u8]) -> Result<(), TestCaseError> {
        let object = is_object(value);
        match decode(value) {
            Decoded::Ours(f) => {
                let (run, seq) = (f.run_id.expect("a run id"), f.seq.expect("a seq"));
                prop_assert!(seq < u64::MAX);
                let slow = serde_json::from_slice::<Fields<'_>>(value).ok();
                match slow {
                    Some(slow) => prop_assert_eq!((slow.run_id, slow.seq), (f.run_id, f.seq)),
                    // Not JSON after all: only the writer's own frame may be read unparsed.
                    None => prop_assert!(
                        has_our_tail(value, run, seq),
                        "{}",
                        String::from_utf8_lossy(value)
                    ),
                }
            }
            Decoded::ForeignJson(f) => {
                prop_assert!(object, "foreign JSON, but not a JSON object");
                prop_assert!(f.run_id.is_none() || f.seq.is_none() || f.seq == Some(u64::MAX));
            }
            Decoded::NotJson => prop_assert!(!object, "a JSON object called not JSON"),
        }
        let mut audit = Audit::default();
        let mut not_json = 0;
        match classify(value, 0, &mut audit, &mut not_json) {
            Some((run, seq)) => {
                let r = &audit.runs[&run];
                prop_assert!(r.seen.contains(seq), "seq {} recorded but not seen", seq);
                prop_assert_eq!((r.seen.len(), audit.foreign, not_json), (1, 0, 0));
                // The same record again is a duplicate, not a second message.
                classify(value, 0, &mut audit, &mut not_json);
                prop_assert_eq!((audit.distinct(), audit.duplicates()), (1, 1));
            }
            None => {
                prop_assert!(audit.runs.is_empty());
                prop_assert_eq!(audit.foreign, 1);
                prop_assert_eq!(not_json, u64::from(!object));
            }
        }
        Ok(())
    }

    /// A message as a producer writes it: origin, run id, size, seq, µs timestamp, id, sent_ns.
    #[derive(Debug, Clone)]
    struct Message {
        origin: String,
        run_id: String,
        min_size: Option<usize>,
        seq: u64,
        epoch_micros: u64,
        id: [u8; 32],
        sent_ns: u64,
    }

    impl Message {
        fn bytes(&self) -> Vec<u8> {
            MessageWriter::new(&self.origin, &self.run_id, self.min_size)
                .write(self.seq, self.epoch_micros, &self.id, self.sent_ns)
                .to_vec()
        }
    }

    fn message(run_id: BoxedStrategy<String>) -> impl Strategy<Value = Message> {
        (
            prop_oneof![
                any::<String>(),
                "juju-[0-9a-f]{6}-[0-9] \\(10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\)"
            ],
            run_id,
            prop::option::of(0..2_000usize),
            prop_oneof![0..1_000_000u64, 0..u64::MAX],
            // Up to 2100: the timestamp keeps its microseconds in an f64.
            0..4_102_444_800_000_000u64,
            "[0-9a-f]{32}",
            any::<u64>(),
        )
            .prop_map(
                |(origin, run_id, min_size, seq, epoch_micros, id, sent_ns)| Message {
                    origin,
                    run_id,
                    min_size,
                    seq,
                    epoch_micros,
                    id: id.as_bytes().try_into().expect("32 hex digits"),
                    sent_ns,
                },
            )
    }

    /// Run ids as kafka-workload makes them, and others that JSON holds unescaped.
    fn run_id() -> BoxedStrategy<String> {
        prop_oneof![
            "[0-9a-f]{16}",
            "[A-Za-z0-9_.-]{1,32}",
            "[ !#-\\[\\]-~]{1,32}",
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(share(0.3))]

        #[test]
        fn any_bytes_decode_as_what_they_are_and_count_once(value in garbage(256)) {
            check_any(&value)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.2))]

        #[test]
        fn json_made_of_our_own_field_names_decodes_as_what_it_is(value in json_soup()) {
            check_any(value.as_bytes())?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn a_written_message_decodes_to_what_was_written(m in message(run_id())) {
            let v = m.bytes();
            let Decoded::Ours(f) = decode(&v) else {
                return Err(TestCaseError::fail(format!("not ours: {}", String::from_utf8_lossy(&v))));
            };
            prop_assert_eq!(f.run_id, Some(m.run_id.as_str()));
            prop_assert_eq!(f.seq, Some(m.seq));
            prop_assert_eq!(f.sent_ns, Some(m.sent_ns));
            prop_assert_eq!(f.id, std::str::from_utf8(&m.id).ok());
            let ts = f.timestamp.expect("a timestamp");
            prop_assert!((ts - m.epoch_micros as f64 / 1e6).abs() < 1e-6, "{} vs {}", ts, m.epoch_micros);
            // The writer's JSON is what serde reads, with client.py's fields.
            let slow: Fields<'_> = serde_json::from_slice(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((slow.id, slow.run_id, slow.seq, slow.sent_ns), (f.id, f.run_id, f.seq, f.sent_ns));
            let doc: Value = serde_json::from_slice(&v).expect("JSON");
            prop_assert_eq!(&doc["origin"], &json!(m.origin));
            prop_assert_eq!(doc["content"].as_str().map(|c| c.starts_with(&format!("Message #{}", m.seq))), Some(true));
            check_any(&v)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn a_written_message_is_padded_to_the_size_asked_for(m in message(run_id())) {
            let natural = Message { min_size: None, ..m.clone() }.bytes().len();
            let v = m.bytes();
            prop_assert_eq!(v.len(), natural.max(m.min_size.unwrap_or(0)));
        }
    }

    proptest! {
        #![proptest_config(share(0.1))]

        #[test]
        fn a_truncated_message_is_foreign_and_not_json(m in message(run_id()), cut in any::<Index>()) {
            let v = m.bytes();
            let cut = &v[..cut.index(v.len())];
            prop_assert!(decode(cut) == Decoded::NotJson, "{}", String::from_utf8_lossy(cut));
            check_any(cut)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.05))]

        #[test]
        fn our_json_with_a_field_of_the_wrong_type_is_foreign(
            m in message(run_id()),
            field in prop_oneof![Just("run_id"), Just("seq"), Just("sent_ns"), Just("timestamp"), Just("_id")],
            with in json_value(),
        ) {
            let mut doc: Value = serde_json::from_slice(&m.bytes()).expect("JSON");
            let fits = match field {
                "run_id" | "_id" => with.is_string() || with.is_null(),
                "seq" | "sent_ns" => with.is_u64() || with.is_null(),
                _ => with.is_number() || with.is_null(),
            };
            doc[field] = with;
            let v = serde_json::to_vec(&doc).expect("JSON");
            if !fits {
                prop_assert!(matches!(decode(&v), Decoded::ForeignJson(_)), "{}", String::from_utf8_lossy(&v));
            }
            check_any(&v)?;
        }
    }

    proptest! {
        #![proptest_config(share(0.1495))]

        #[test]
        fn a_damaged_message_decodes_as_what_it_is(m in message(run_id()), damage in damages()) {
            check_any(&apply(&m.bytes(), &damage))?;
        }
    }

    proptest! {
        #![proptest_config(share(0.0005))]

        #[test]
        fn huge_deep_and_binary_values_decode_as_what_they_are(
            m in message(run_id()),
            kind in 0..6usize,
            depth in 1_000..200_000usize,
            filler in any::<u8>(),
        ) {
            let mb = 1 << 20;
            let v = match kind {
                0 => Message { min_size: Some(mb), ..m }.bytes(),
                1 => Message { origin: "\u{1F4A5}".repeat(mb / 4), ..m }.bytes(),
                2 => nested(depth, "{\"a\":", "1", "}").into_bytes(),
                3 => nested(depth, "[", "", "]").into_bytes(),
                4 => vec![filler; mb],
                _ => {
                    let mut v = m.bytes();
                    v.splice(1..1, format!("\"x\": \"{}\", ", "\\u0041".repeat(mb / 6)).into_bytes());
                    v
                }
            };
            check_any(&v)?;
        }
    }

    const ID: &[u8; 32] = b"9f4da8c1df2547f18c4d3365f7fb1c54";

    #[test]
    fn a_message_asked_one_byte_longer_than_it_is_gets_that_byte() {
        let natural = MessageWriter::new("o", "r", None).write(7, 1, ID, 2).len();
        let mut w = MessageWriter::new("o", "r", Some(natural + 1));
        let v = w.write(7, 1, ID, 2).to_vec();
        assert_eq!(v.len(), natural + 1);
        assert!(matches!(
            decode(&v),
            Decoded::Ours(Fields { seq: Some(7), .. })
        ));
    }

    #[test]
    fn our_fields_of_the_wrong_type_make_foreign_json_not_not_json() {
        for value in [
            r#"{"run_id": false, "seq": 0}"#,
            r#"{"r\u0075n_id": false}"#,
            r#"{"run_id": "r", "seq": "1"}"#,
            r#"{"run_id": "r", "seq": -1}"#,
            r#"{"run_id": "r", "seq": 1.5}"#,
            r#"{"run_id": "r", "seq": 1, "sent_ns": "now"}"#,
            r#"{"timestamp": "yesterday", "run_id": "r", "seq": 1}"#,
            r#"{"run_id": "r", "seq": 1, "seq": 2}"#,
        ] {
            assert_eq!(
                decode(value.as_bytes()),
                Decoded::ForeignJson(Fields::default()),
                "{value}"
            );
        }
    }

    #[test]
    fn client_py_json_with_an_escaped_id_is_foreign_json() {
        let value =
            br#"{"timestamp": 1.5, "_id": "\u00e9", "origin": "x", "content": "Message #1"}"#;
        assert!(matches!(decode(value), Decoded::ForeignJson(_)));
    }

    #[test]
    fn a_seq_of_u64_max_is_foreign_since_the_audit_cannot_hold_it() {
        // Counted as ours, it became the range [u64::MAX, 0): never seen, so never a duplicate,
        // and a result file its own merge refuses ("ends before it starts").
        let value = br#"{"run_id": "r", "seq": 18446744073709551615}"#;
        assert!(matches!(decode(value), Decoded::ForeignJson(_)));
        let value = br#"{"run_id": "r", "seq": 18446744073709551614}"#;
        assert!(matches!(
            decode(value),
            Decoded::Ours(Fields {
                seq: Some(18446744073709551614),
                ..
            })
        ));
    }

    #[test]
    fn a_message_with_an_unescaped_quote_in_its_content_is_not_ours() {
        let mut v = MessageWriter::new("o", "0123456789abcdef", Some(200))
            .write(5, 1, ID, 2)
            .to_vec();
        let last_dot = v.iter().rposition(|&b| b == b'.').expect("padding");
        v[last_dot - 1] = b'"';
        assert!(serde_json::from_slice::<Value>(&v).is_err());
        assert!(
            !matches!(decode(&v), Decoded::Ours(_)),
            "{}",
            String::from_utf8_lossy(&v)
        );
    }

    /// JSON objects, mostly well-formed, made of our field names and values of every type.
    fn json_soup() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("run_id"),
            Just("seq"),
            Just("sent_ns"),
            Just("timestamp"),
            Just("_id"),
            Just("origin"),
            Just("content"),
            Just("r\\u0075n_id"),
            Just(""),
        ];
        let value = prop_oneof![
            3 => json_value().prop_map(|v| v.to_string()),
            1 => Just("\"r\\/1\"".to_string()),
            1 => Just("\"\\u00e9\"".to_string()),
            1 => Just("18446744073709551615".to_string()),
            1 => Just("18446744073709551616".to_string()),
            1 => Just("1e400".to_string()),
            1 => Just("-0".to_string()),
            1 => Just("01".to_string()),
            1 => Just("\"\u{0}\"".to_string()),
        ];
        let members = prop::collection::vec((key, value), 0..7);
        (
            members,
            " {0,2}",
            prop_oneof![Just(""), Just(","), Just("}"), Just(" x")],
        )
            .prop_map(|(members, pad, tail)| {
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{pad}{v}"))
                    .collect();
                format!("{pad}{{{}}}{tail}", body.join(","))
            })
    }
}

/// Findings in code this file only reaches through its callers.
mod findings {
    use kafka_workload::report::merge::merge;
    use kafka_workload::report::result::{ProducerResult, RunResult, SCHEMA};
    use kafka_workload::workload::audit::{Audit, Observation, RangeSet};

    /// It used to become the range [u64::MAX, 0) (u64::MAX + 1 wrapped), which the audit's own
    /// reader refuses. No run reaches it, and the decoder already calls such a value foreign:
    /// the audit does the same, and what it holds still reads back.
    #[test]
    fn u64_max_recorded_in_the_audit_is_foreign_and_the_audit_survives_a_round_trip() {
        let mut a = Audit::default();
        a.record("r", 0, u64::MAX - 1);
        assert_eq!(a.record("r", 0, u64::MAX), Observation::Foreign);
        assert_eq!((a.foreign, a.distinct(), a.duplicates()), (1, 1, 0));
        assert!(a.runs["r"].seen.contains(u64::MAX - 1));
        assert!(!a.runs["r"].seen.contains(u64::MAX));
        let text = serde_json::to_string(&a.runs["r"].seen).unwrap();
        assert_eq!(
            serde_json::from_str::<RangeSet>(&text).unwrap(),
            a.runs["r"].seen
        );
    }

    #[test]
    fn merging_counts_past_u64_max_is_an_error_not_a_wrapped_sum() {
        let half = RunResult {
            schema: SCHEMA.into(),
            producer: Some(ProducerResult {
                sent: 1 << 63,
                acked: 1 << 63,
                ..Default::default()
            }),
            ..Default::default()
        };
        match merge(&[half.clone(), half]) {
            Err(e) => assert!(format!("{e:#}").contains("past"), "{e:#}"),
            Ok(m) => panic!("merged sent = {}", m.producer.unwrap().sent),
        }
    }

    #[test]
    fn a_histogram_header_claiming_4_gib_is_refused_without_allocating_it() {
        use base64::Engine as _;
        // An uncompressed V2 header that claims a payload of u32::MAX bytes, and no payload:
        // hdrhistogram sizes its buffer from the claim before reading.
        let mut b = Vec::new();
        b.extend_from_slice(&0x1c84_9313u32.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&3_600_000_000u64.to_be_bytes());
        b.extend_from_slice(&1f64.to_be_bytes());
        let histogram = base64::engine::general_purpose::STANDARD.encode(b);
        let started = std::time::Instant::now();
        let err = kafka_workload::report::stats::decode_histogram(&histogram).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "{err:#}"
        );
    }
}
