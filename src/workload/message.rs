//! The message value: client.py's JSON object (`timestamp`, `_id`, `origin`, `content`, in that
//! order, with Python's `json.dumps` separators and ASCII escaping), followed by kafka-workload's
//! own fields `run_id`, `seq` and `sent_ns` for the audit and in-process end-to-end latency.
//!
//! [`MessageWriter`] builds values into one reused buffer, so producing allocates nothing per
//! message; [`decode`] reads any record and says whether it is ours, client.py's or foreign.

use std::io::Write as _;

use serde::Deserialize;

/// Builds message values for one producer run into a reused buffer.
pub struct MessageWriter {
    prefix_origin: Vec<u8>,
    run_suffix: Vec<u8>,
    min_size: usize,
    buf: Vec<u8>,
}

/// Appends `s` as a JSON string the way Python's `json.dumps` does (ASCII only).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c as u8),
        }
    }
    out.push(b'"');
}

/// Appends `v` in decimal; `write!` would go through `core::fmt`, which is a tenth of the send
/// loop's time at several integers per message.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_u64_width(out, v, 1);
}

/// Appends `v` in decimal, left-padded with zeros to at least `width` digits. itoa writes two
/// digits per step from a table: digit by digit, the value's four numbers were a fifth of the
/// send loop's instructions (callgrind).
fn push_u64_width(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let text = buf.format(v).as_bytes();
    out.resize(out.len() + width.saturating_sub(text.len()), b'0');
    out.extend_from_slice(text);
}

/// How many decimal digits `v` takes.
fn digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Python's repr of an epoch timestamp with microsecond precision: shortest digits, at least one
/// after the point (`1768919219.744478`, `1768919219.5`, `1768919219.0`).
pub fn push_py_timestamp(out: &mut Vec<u8>, epoch_micros: u64) {
    let secs = epoch_micros / 1_000_000;
    let mut frac = epoch_micros % 1_000_000;
    push_u64(out, secs);
    out.push(b'.');
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut width = 6;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    push_u64_width(out, frac, width);
}

impl MessageWriter {
    /// A writer for one run: `origin` goes into every message, `run_id` names the run, and values
    /// are padded to at least `min_size` bytes by growing `content`.
    pub fn new(origin: &str, run_id: &str, min_size: Option<usize>) -> Self {
        let mut prefix_origin = b", \"origin\": ".to_vec();
        push_json_str(&mut prefix_origin, origin);
        prefix_origin.extend_from_slice(b", \"content\": \"Message #");
        let mut run_suffix = b", \"run_id\": ".to_vec();
        push_json_str(&mut run_suffix, run_id);
        run_suffix.extend_from_slice(b", \"seq\": ");
        MessageWriter {
            prefix_origin,
            run_suffix,
            min_size: min_size.unwrap_or(0),
            buf: Vec::with_capacity(256),
        }
    }

    /// Builds message `seq` and returns its bytes (valid until the next call).
    pub fn write(&mut self, seq: u64, epoch_micros: u64, id: &[u8; 32], sent_ns: u64) -> &[u8] {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"timestamp\": ");
        push_py_timestamp(b, epoch_micros);
        b.extend_from_slice(b", \"_id\": \"");
        b.extend_from_slice(id);
        b.push(b'"');
        b.extend_from_slice(&self.prefix_origin);
        push_u64(b, seq);
        // What follows `content`: `"`, the run suffix, seq, `, "sent_ns": `, sent_ns, `}`.
        let tail_len = 1 + self.run_suffix.len() + digits(seq) + 13 + digits(sent_ns) + 1;
        // The space before the dots is padding too: one byte short takes the space alone.
        if self.min_size > b.len() + tail_len {
            let pad = self.min_size - (b.len() + 1 + tail_len);
            b.push(b' ');
            b.resize(b.len() + pad, b'.');
        }
        b.push(b'"');
        b.extend_from_slice(&self.run_suffix);
        push_u64(b, seq);
        b.extend_from_slice(b", \"sent_ns\": ");
        push_u64(b, sent_ns);
        b.push(b'}');
        b
    }
}

/// What a record's value turned out to be.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// A kafka-workload message.
    Ours(Fields<'a>),
    /// JSON in client.py's shape (or any JSON object) without a run id and a sequence number the
    /// audit can hold. One whose fields do not read as ours (another type, an escape in a
    /// string) has none read.
    ForeignJson(Fields<'a>),
    /// Not a JSON object (client.py's kafka-operator variant writes `Message #i`).
    NotJson,
}

/// The fields read from a JSON value; all optional so that any object decodes.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Fields<'a> {
    /// Producer's wall clock, epoch seconds.
    pub timestamp: Option<f64>,
    /// uuid4 hex.
    #[serde(rename = "_id", borrow)]
    pub id: Option<&'a str>,
    /// The producer run.
    #[serde(borrow)]
    pub run_id: Option<&'a str>,
    /// Sequence number within the run.
    pub seq: Option<u64>,
    /// Producer's monotonic send time, ns since its process anchor.
    pub sent_ns: Option<u64>,
}

/// Reads a record value.
pub fn decode(value: &[u8]) -> Decoded<'_> {
    if let Some(f) = decode_written(value) {
        return Decoded::Ours(f);
    }
    // serde would also accept a JSON array for a struct; only objects are messages.
    if value.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Decoded::NotJson;
    }
    match serde_json::from_slice::<Fields<'_>>(value) {
        // The audit's half-open ranges cannot hold u64::MAX; no run gets that far.
        Ok(f) if f.run_id.is_some() && f.seq.is_some_and(|s| s < u64::MAX) => Decoded::Ours(f),
        Ok(f) => Decoded::ForeignJson(f),
        // A field of another type than ours, or one of our strings with an escape (which cannot
        // be borrowed), still leaves a JSON object.
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() => {
            Decoded::ForeignJson(Fields::default())
        }
        Err(_) => Decoded::NotJson,
    }
}

/// Reads a value in exactly the shape [`MessageWriter`] writes, without a JSON parser: the fields
/// the audit needs sit at fixed places at the start (`timestamp`, `_id`) and at the end (`run_id`,
/// `seq`, `sent_ns`). `origin` and `content` in between are not parsed, only checked to be plain
/// printable ASCII (which is what our writer makes of them unless `--origin` needs escapes,
/// which serde then reads). Anything else,
/// including JSON with other spacing or field order, gives `None` and goes to serde. This is a
/// quarter of the consumer loop's time saved (scripts/bench).
fn decode_written(value: &[u8]) -> Option<Fields<'_>> {
    let rest = value.strip_prefix(b"{\"timestamp\": ")?;
    // `push_py_timestamp`'s shape: seconds, a point, 1 to 6 digits of fraction.
    let (secs_len, secs) = leading_u64(rest)?;
    let rest = rest[secs_len..].strip_prefix(b".")?;
    let (frac_len, frac) = leading_u64(rest)?;
    if frac_len > 6 {
        return None;
    }
    let timestamp = secs as f64 + frac as f64 / 10f64.powi(frac_len as i32);
    let rest = rest[frac_len..].strip_prefix(b", \"_id\": \"")?;
    // A fold without early exit: the compiler checks the 32 bytes in vector registers, where
    // `all` took a branch per byte (a tenth of the consumer loop, perf).
    let id_bytes = rest.get(..32)?;
    if !id_bytes
        .iter()
        .fold(true, |ok, c| ok & c.is_ascii_hexdigit())
    {
        return None;
    }
    let id = std::str::from_utf8(id_bytes).ok()?;
    let middle = rest[32..].strip_prefix(b"\", \"origin\": \"")?;

    let (body, sent_ns) = split_trailing_u64(middle.strip_suffix(b"}")?)?;
    let (body, seq) = split_trailing_u64(body.strip_suffix(b", \"sent_ns\": ")?)?;
    let body = body.strip_suffix(b"\", \"seq\": ")?;
    let quote = body.iter().rposition(|&c| c == b'"')?;
    let run_id = std::str::from_utf8(&body[quote + 1..]).ok()?;
    let run_id_char = |c: u8| c.is_ascii_alphanumeric() | (c == b'-') | (c == b'_') | (c == b'.');
    if run_id.is_empty() || !run_id.bytes().fold(true, |ok, c| ok & run_id_char(c)) {
        return None;
    }
    // What is left holds origin and content: `...", "content": "...", "run_id": `. The search
    // runs over the whole padded content: a SIMD search, built once (building it per record
    // was a twentieth of the consumer loop).
    static CONTENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\", \"content\": \""));
    let inner = body[..=quote].strip_suffix(b"\", \"run_id\": \"")?;
    let sep = CONTENT.find(inner)?;
    // Not parsed, but they must still be JSON strings. Printable ASCII without quotes or escapes
    // passes in one pass over the bytes (in vector registers, as above); anything else is read
    // by the rules, and what they cannot vouch for is left to serde.
    let plain = |b: &[u8]| {
        b.iter().fold(true, |ok, &c| {
            ok & (0x20..0x80).contains(&c) & (c != b'"') & (c != b'\\')
        })
    };
    let string = |b: &[u8]| plain(b) || is_json_string_body(b);
    if !(string(&inner[..sep]) && string(&inner[sep + CONTENT.needle().len()..])) {
        return None;
    }
    Some(Fields {
        timestamp: Some(timestamp),
        id: Some(id),
        run_id: Some(run_id),
        seq: Some(seq),
        sent_ns: Some(sent_ns),
    })
}

/// Whether `b` is the inside of a JSON string: UTF-8, no control bytes, no quote that is not
/// escaped, only JSON's escapes. False for a `\\u` escape of a surrogate (whether it pairs is
/// left to serde), so a true answer is always right.
fn is_json_string_body(b: &[u8]) -> bool {
    if std::str::from_utf8(b).is_err() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | 0..=0x1f => return false,
            b'\\' => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let Some(hex) = b.get(i + 2..i + 6) else {
                        return false;
                    };
                    let unit = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    if unit.is_none_or(|u| (0xd800..=0xdfff).contains(&u)) {
                        return false;
                    }
                    i += 6;
                }
                _ => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// The decimal number at the start of `b`: (how many digits, the number); at most 19 digits.
fn leading_u64(b: &[u8]) -> Option<(usize, u64)> {
    let len = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    if len == 0 || len > 19 {
        return None;
    }
    let n = b[..len]
        .iter()
        .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
    Some((len, n))
}

/// Splits the decimal number at the end of `b` off: (what precedes it, the number).
fn split_trailing_u64(b: &[u8]) -> Option<(&[u8], u64)> {
    let start = b
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &b[start..];
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let (len, n) = leading_u64(digits)?;
    (len == digits.len()).then_some((&b[..start], n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &[u8; 32] = b"9f4da8c1df2547f18c4d3365f7fb1c54";

    #[test]
    fn value_keeps_client_py_key_order_and_separators() {
        let mut w = MessageWriter::new("juju-29b29f-7 (10.157.174.242)", "run1", None);
        let v = std::str::from_utf8(w.write(11, 1_768_919_219_744_478, ID, 42))
            .unwrap()
            .to_string();
        assert_eq!(
            v,
            "{\"timestamp\": 1768919219.744478, \"_id\": \"9f4da8c1df2547f18c4d3365f7fb1c54\", \
             \"origin\": \"juju-29b29f-7 (10.157.174.242)\", \"content\": \"Message #11\", \
             \"run_id\": \"run1\", \"seq\": 11, \"sent_ns\": 42}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(parsed["content"], "Message #11");
    }

    #[test]
    fn python_timestamp_repr_drops_trailing_zeros() {
        let mut out = Vec::new();
        push_py_timestamp(&mut out, 1_700_000_000_500_000);
        assert_eq!(out, b"1700000000.5");
        out.clear();
        push_py_timestamp(&mut out, 1_700_000_000_000_000);
        assert_eq!(out, b"1700000000.0");
        out.clear();
        push_py_timestamp(&mut out, 1_700_000_000_000_010);
        assert_eq!(out, b"1700000000.00001");
    }

    #[test]
    fn integers_are_written_as_fmt_writes_them() {
        for v in [0, 7, 10, 99, 100, 123_456, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
        let mut out = Vec::new();
        push_u64_width(&mut out, 42, 6);
        assert_eq!(out, b"000042");
    }

    #[test]
    fn origin_is_escaped_as_python_ensure_ascii_does() {
        let mut out = Vec::new();
        push_json_str(&mut out, "h\u{e9}st \"q\" \u{1F600}");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"h\\u00e9st \\\"q\\\" \\ud83d\\ude00\""
        );
    }

    #[test]
    fn padded_value_reaches_the_requested_size_and_still_decodes() {
        let mut w = MessageWriter::new("o", "r", Some(400));
        let v = w.write(123456, 1, ID, 7).to_vec();
        assert_eq!(v.len(), 400);
        match decode(&v) {
            Decoded::Ours(f) => {
                assert_eq!(
                    (f.run_id, f.seq, f.sent_ns),
                    (Some("r"), Some(123456), Some(7))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_in_our_shape_that_is_not_json_is_not_ours() {
        let mut w = MessageWriter::new("o", "0123456789abcdef", Some(300));
        let good = w.write(5, 1_700_000_000_000_000, ID, 9).to_vec();
        assert!(matches!(decode(&good), Decoded::Ours(_)));
        let dots = good.iter().rposition(|&b| b == b'.').expect("padding");
        // A raw control byte, a backslash that escapes the closing quote, a bad escape: each in
        // the content the fast path skips over.
        for bad in [&b"\x01"[..], b"\\", b"\\x"] {
            let mut v = good.clone();
            v.splice(dots + 1 - bad.len()..=dots, bad.iter().copied());
            assert!(serde_json::from_slice::<serde_json::Value>(&v).is_err());
            assert!(
                matches!(decode(&v), Decoded::NotJson),
                "{}",
                String::from_utf8_lossy(&v)
            );
        }
        // A lone surrogate escape is serde's to judge (it skips ignored strings unchecked).
        let mut v = good.clone();
        v.splice(dots - 5..=dots, b"\\ud800".iter().copied());
        assert!(decode_written(&v).is_none());
        // Escapes JSON allows are read by the rules, without serde.
        let mut v = good.clone();
        v.splice(dots - 11..=dots, b"\\u00e9\\n".iter().copied());
        assert!(
            decode_written(&v).is_some(),
            "{}",
            String::from_utf8_lossy(&v)
        );
    }

    #[test]
    fn written_values_read_without_serde_read_as_serde_reads_them() {
        let origins = [
            "o",
            "juju-29b29f-7 (10.157.174.242)",
            "h\u{e9}st \"q\", \"run_id\": \"x\" \\",
        ];
        for (i, origin) in origins.iter().enumerate() {
            for size in [None, Some(100), Some(1000)] {
                let mut w = MessageWriter::new(origin, "0123456789abcdef", size);
                for (seq, ts) in [(0, 1_700_000_000_000_000), (123_456, 1_768_919_219_744_478)] {
                    let v = w.write(seq, ts + i as u64, ID, seq * 1_000 + 7).to_vec();
                    let fast = decode_written(&v).expect("the writer's shape");
                    let slow: Fields<'_> = serde_json::from_slice(&v).unwrap();
                    assert_eq!(
                        (fast.id, fast.run_id, fast.seq),
                        (slow.id, slow.run_id, slow.seq)
                    );
                    assert_eq!(fast.sent_ns, slow.sent_ns);
                    let (a, b) = (fast.timestamp.unwrap(), slow.timestamp.unwrap());
                    assert!((a - b).abs() < 1e-6, "{a} {b}");
                }
            }
        }
    }

    #[test]
    fn values_not_in_the_writers_exact_shape_go_to_serde() {
        let compact = br#"{"timestamp":1.5,"_id":"9f4da8c1df2547f18c4d3365f7fb1c54","origin":"o","content":"Message #1","run_id":"r","seq":1,"sent_ns":2}"#;
        assert!(decode_written(compact).is_none());
        assert!(matches!(
            decode(compact),
            Decoded::Ours(Fields { seq: Some(1), .. })
        ));
        let reordered = br#"{"timestamp": 1.5, "_id": "9f4da8c1df2547f18c4d3365f7fb1c54", "origin": "o", "content": "Message #1", "seq": 1, "run_id": "r", "sent_ns": 2}"#;
        assert!(decode_written(reordered).is_none());
        assert!(matches!(decode(reordered), Decoded::Ours(_)));
        let leading_zero = br#"{"timestamp": 1.5, "_id": "9f4da8c1df2547f18c4d3365f7fb1c54", "origin": "o", "content": "Message #1", "run_id": "r", "seq": 01, "sent_ns": 2}"#;
        assert!(decode_written(leading_zero).is_none());
        assert_eq!(decode_written(b"{\"timestamp\": "), None);
    }

    #[test]
    fn client_py_json_is_foreign_and_plain_text_is_not_json() {
        let py = br#"{"timestamp": 1.5, "_id": "ab", "origin": "x", "content": "Message #1"}"#;
        assert!(matches!(
            decode(py),
            Decoded::ForeignJson(Fields { id: Some("ab"), .. })
        ));
        assert_eq!(decode(b"Message #1"), Decoded::NotJson);
        assert_eq!(decode(b"[1,2]"), Decoded::NotJson);
    }
}
