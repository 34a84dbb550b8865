//! The loss / duplicate / order audit: which sequence numbers of which producer run arrived, on
//! which partition, in what order.
//!
//! Seen sequence numbers are kept as ranges per run, so memory follows the number of gaps, not the
//! number of messages: 10^8 messages that arrive in order per partition cost a handful of ranges.
//! Pure bookkeeping; the consumer loop feeds it and the report reads it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A set of u64 kept as disjoint, non-adjacent half-open ranges `[start, end)`.
///
/// Serialized as a JSON array of `[start, end)` pairs in ascending order; deserializing accepts
/// pairs in any order, overlapping or adjacent, and compacts them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive).
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl Serialize for RangeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ranges.iter().map(|(&s, &e)| [s, e]))
    }
}

impl<'de> Deserialize<'de> for RangeSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut set = RangeSet::default();
        for [s, e] in pairs {
            if s > e {
                return Err(serde::de::Error::custom(format!(
                    "range [{s}, {e}) ends before it starts"
                )));
            }
            set.insert_range(s, e);
        }
        Ok(set)
    }
}

impl RangeSet {
    /// Inserts `v`; false if it was already present. The set holds `[0, u64::MAX)`: inserting
    /// u64::MAX is a caller's error (its range would end past u64).
    pub fn insert(&mut self, v: u64) -> bool {
        assert!(v < u64::MAX, "RangeSet holds values below u64::MAX");
        // The range starting at or before v.
        let before = self.ranges.range(..=v).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, e)) = before {
            if v < e {
                return false;
            }
        }
        self.len += 1;
        let joins_before = matches!(before, Some((_, e)) if e == v);
        let after_end = self.ranges.get(&(v + 1)).copied();
        match (joins_before, after_end) {
            (true, Some(end)) => {
                self.ranges.remove(&(v + 1));
                let start = before.expect("joins").0;
                self.ranges.insert(start, end);
            }
            (true, None) => {
                let start = before.expect("joins").0;
                self.ranges.insert(start, v + 1);
            }
            (false, Some(end)) => {
                self.ranges.remove(&(v + 1));
                self.ranges.insert(v, end);
            }
            (false, None) => {
                self.ranges.insert(v, v + 1);
            }
        }
        true
    }

    /// Whether `v` is present.
    pub fn contains(&self, v: u64) -> bool {
        matches!(self.ranges.range(..=v).next_back(), Some((_, &e)) if v < e)
    }

    /// How many values are present.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ranges it takes (memory use).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The largest value present.
    pub fn max(&self) -> Option<u64> {
        self.ranges.iter().next_back().map(|(_, &e)| e - 1)
    }

    /// How many values in `[0, upto)` are absent.
    pub fn missing_below(&self, upto: u64) -> u64 {
        let present: u64 = self
            .ranges
            .iter()
            .take_while(|(&s, _)| s < upto)
            .map(|(&s, &e)| e.min(upto) - s)
            .sum();
        upto - present
    }

    /// The absent values below `upto` as ranges, at most `limit` of them.
    pub fn gaps_below(&self, upto: u64, limit: usize) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut next = 0;
        for (&s, &e) in &self.ranges {
            if s >= upto || gaps.len() >= limit {
                break;
            }
            if s > next {
                gaps.push((next, s));
            }
            next = e;
        }
        if next < upto && gaps.len() < limit {
            gaps.push((next, upto));
        }
        gaps
    }

    /// Inserts every value of `[start, end)`; returns how many were not present before.
    /// Costs O(log n) plus one step per range it absorbs, whatever the width.
    pub fn insert_range(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let (mut lo, mut hi) = (start, end);
        // A range that starts before `start` and reaches it (overlapping or adjacent) is absorbed.
        if let Some((&s, &e)) = self.ranges.range(..start).next_back() {
            if e >= start {
                lo = s;
                hi = hi.max(e);
            }
        }
        let mut covered = 0;
        // Ranges are disjoint and non-adjacent, so only those starting in [lo, hi] can touch.
        while let Some((&s, &e)) = self.ranges.range(lo..=hi).next() {
            self.ranges.remove(&s);
            covered += e - s;
            hi = hi.max(e);
        }
        self.ranges.insert(lo, hi);
        let added = (hi - lo) - covered;
        self.len += added;
        added
    }

    /// Adds every value of `other`, range by range; returns how many were new.
    pub fn merge(&mut self, other: &RangeSet) -> u64 {
        other
            .ranges
            .iter()
            .map(|(&s, &e)| self.insert_range(s, e))
            .sum()
    }

    /// How many values of `[start, end)` the set holds.
    pub fn count_within(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        // The range that starts before `start` may reach into the interval.
        let first = self
            .ranges
            .range(..start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        first
            .into_iter()
            .chain(self.ranges.range(start..end).map(|(&s, &e)| (s, e)))
            .map(|(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// The ranges `[start, end)` in ascending order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

/// Per-run bookkeeping.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAudit {
    /// Sequence numbers seen.
    pub seen: RangeSet,
    /// Records whose sequence number had already arrived.
    pub duplicates: u64,
    /// Records that arrived after a higher sequence number on the same partition.
    pub out_of_order: u64,
    /// The highest sequence number seen per partition.
    #[serde(skip)]
    last_on_partition: HashMap<i32, u64>,
}

/// Equal when what arrived is equal; the per-partition order state is a working detail.
impl PartialEq for RunAudit {
    fn eq(&self, other: &Self) -> bool {
        (self.seen == other.seen)
            && self.duplicates == other.duplicates
            && self.out_of_order == other.out_of_order
    }
}

/// What one record turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// First time this sequence number arrived, in order on its partition.
    New,
    /// First arrival, but after a higher number on its partition.
    NewOutOfOrder,
    /// It had arrived before.
    Duplicate,
    /// A sequence number of u64::MAX, which no run reaches and the half-open ranges cannot
    /// hold: counted as foreign.
    Foreign,
}

/// The audit across every run seen by one consumer.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// Runs by run id.
    pub runs: BTreeMap<String, RunAudit>,
    /// Records that are not kafka-workload messages (client.py JSON, plain text, anything else).
    pub foreign: u64,
}

impl Audit {
    /// Records a kafka-workload message.
    pub fn record(&mut self, run_id: &str, partition: i32, seq: u64) -> Observation {
        if seq == u64::MAX {
            self.foreign += 1;
            return Observation::Foreign;
        }
        let run = match self.runs.get_mut(run_id) {
            Some(run) => run,
            None => self.runs.entry(run_id.to_string()).or_default(),
        };
        if !run.seen.insert(seq) {
            run.duplicates += 1;
            return Observation::Duplicate;
        }
        let last = run.last_on_partition.entry(partition).or_insert(seq);
        if seq < *last {
            run.out_of_order += 1;
            Observation::NewOutOfOrder
        } else {
            *last = seq;
            Observation::New
        }
    }

    /// Counts a record that is not ours.
    pub fn record_foreign(&mut self) {
        self.foreign += 1;
    }

    /// Distinct kafka-workload messages across runs.
    pub fn distinct(&self) -> u64 {
        self.runs.values().map(|r| r.seen.len()).sum()
    }

    /// Distinct messages of one run.
    pub fn distinct_of(&self, run_id: &str) -> u64 {
        self.runs.get(run_id).map_or(0, |r| r.seen.len())
    }

    /// Duplicates across runs.
    pub fn duplicates(&self) -> u64 {
        self.runs.values().map(|r| r.duplicates).sum()
    }

    /// Out-of-order arrivals across runs.
    pub fn out_of_order(&self) -> u64 {
        self.runs.values().map(|r| r.out_of_order).sum()
    }

    /// Messages missing below each run's highest sequence number (the gaps).
    pub fn gaps(&self) -> u64 {
        self.runs
            .values()
            .map(|r| r.seen.max().map_or(0, |m| r.seen.missing_below(m + 1)))
            .sum()
    }

    /// Folds another consumer's audit into this one (for fleet merges); an error when a count
    /// would pass u64::MAX (audits read from files can claim anything).
    pub fn merge(&mut self, other: &Audit) -> anyhow::Result<()> {
        self.foreign = add_count(self.foreign, other.foreign, "foreign records")?;
        for (id, theirs) in &other.runs {
            let mine = self.runs.entry(id.clone()).or_default();
            let new = mine.seen.merge(&theirs.seen);
            // What both consumers saw arrived twice across the fleet.
            let twice = add_count(theirs.duplicates, theirs.seen.len() - new, "duplicates")?;
            mine.duplicates = add_count(mine.duplicates, twice, "duplicates")?;
            mine.out_of_order = add_count(mine.out_of_order, theirs.out_of_order, "out-of-order")?;
        }
        Ok(())
    }

    /// Folds in the audit of another consumer group: each group reads every record, so what
    /// both saw is not a duplicate; only each group's own duplicates count. Foreign records
    /// are the same ones read again: the larger count stands.
    pub fn merge_group(&mut self, other: &Audit) -> anyhow::Result<()> {
        self.foreign = self.foreign.max(other.foreign);
        for (id, theirs) in &other.runs {
            let mine = self.runs.entry(id.clone()).or_default();
            mine.seen.merge(&theirs.seen);
            mine.duplicates = add_count(mine.duplicates, theirs.duplicates, "duplicates")?;
            mine.out_of_order = add_count(mine.out_of_order, theirs.out_of_order, "out-of-order")?;
        }
        Ok(())
    }
}

/// `a + b` for counts merged from several results, or an error naming the count: inputs are
/// files, and a sum that wrapped would be a wrong figure reported as a right one.
pub fn add_count(a: u64, b: u64, what: &str) -> anyhow::Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| anyhow::anyhow!("cannot merge: the {what} add up past {}", u64::MAX))
}

/// The sum of counts merged from several results; an error as for [`add_count`].
pub fn sum_counts(counts: impl IntoIterator<Item = u64>, what: &str) -> anyhow::Result<u64> {
    counts.into_iter().try_fold(0, |a, b| add_count(a, b, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_within_counts_only_the_overlap() {
        let mut s = RangeSet::default();
        s.insert_range(0, 10);
        s.insert_range(20, 30);
        assert_eq!(s.count_within(5, 25), 10);
        assert_eq!(s.count_within(10, 20), 0);
        assert_eq!(s.count_within(0, 100), 20);
        assert_eq!(s.count_within(29, 29), 0);
        assert_eq!(s.count_within(9, 21), 2);
    }

    #[test]
    fn range_set_compacts_contiguous_values_in_any_order() {
        let mut s = RangeSet::default();
        for v in [5, 3, 4, 0, 2, 1] {
            assert!(s.insert(v));
        }
        assert_eq!(s.range_count(), 1);
        assert_eq!(s.len(), 6);
        assert!(!s.insert(3));
        assert!(s.contains(5) && !s.contains(6));
        s.insert(10);
        assert_eq!(s.range_count(), 2);
        assert_eq!(s.missing_below(11), 4);
        assert_eq!(s.gaps_below(12, 10), vec![(6, 10), (11, 12)]);
        assert_eq!(s.max(), Some(10));
    }

    #[test]
    fn a_million_in_order_values_over_six_interleaved_partitions_stay_one_range() {
        let mut a = Audit::default();
        for seq in 0..1_000_000u64 {
            a.record("r", (seq % 6) as i32, seq);
        }
        assert_eq!(a.runs["r"].seen.range_count(), 1);
        assert_eq!(
            (a.distinct(), a.duplicates(), a.out_of_order(), a.gaps()),
            (1_000_000, 0, 0, 0)
        );
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_told_apart() {
        let mut a = Audit::default();
        assert_eq!(a.record("r", 0, 0), Observation::New);
        assert_eq!(a.record("r", 0, 2), Observation::New);
        assert_eq!(a.record("r", 0, 1), Observation::NewOutOfOrder);
        assert_eq!(a.record("r", 1, 1), Observation::Duplicate);
        assert_eq!(a.record("r", 1, 5), Observation::New);
        a.record_foreign();
        assert_eq!(a.distinct(), 4);
        assert_eq!(a.duplicates(), 1);
        assert_eq!(a.out_of_order(), 1);
        assert_eq!(a.gaps(), 2); // 3 and 4
        assert_eq!(a.foreign, 1);
    }

    #[test]
    fn insert_range_absorbs_overlapping_and_adjacent_ranges() {
        let mut s = RangeSet::default();
        for v in [0, 1, 5, 9, 20] {
            s.insert(v);
        }
        assert_eq!(s.range_count(), 4);
        // [2, 9) touches [0, 2), [5, 6) and [9, 10): one range [0, 10) remains.
        assert_eq!(s.insert_range(2, 9), 6);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 10), (20, 21)]);
        assert_eq!(s.len(), 11);
        assert_eq!(s.insert_range(3, 7), 0);
        assert_eq!(s.insert_range(7, 7), 0);
        assert_eq!(s.insert_range(15, 30), 14);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 10), (15, 30)]);
        assert_eq!(s.len(), 25);
    }

    #[test]
    fn merging_wide_ranges_costs_ranges_not_values() {
        let mut a = RangeSet::default();
        a.insert_range(0, 50_000_000);
        let mut b = RangeSet::default();
        b.insert_range(40_000_000, 100_000_000);
        b.insert_range(200_000_000, 200_000_010);
        // Value by value this would take seconds; by ranges it is immediate.
        let started = std::time::Instant::now();
        assert_eq!(a.merge(&b), 50_000_010);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(a.len(), 100_000_010);
        assert_eq!(a.range_count(), 2);
        assert_eq!(a.missing_below(200_000_010), 100_000_000);
    }

    #[test]
    fn range_set_serializes_as_pairs_and_compacts_on_reading() {
        let mut s = RangeSet::default();
        s.insert_range(0, 3);
        s.insert(7);
        assert_eq!(serde_json::to_string(&s).unwrap(), "[[0,3],[7,8]]");
        let back: RangeSet = serde_json::from_str("[[7,8],[0,2],[2,3],[1,2]]").unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<RangeSet>("[[5,1]]").is_err());
    }

    #[test]
    fn audit_roundtrips_through_json_with_its_counts() {
        let mut a = Audit::default();
        for s in [0, 1, 2, 4, 3, 3] {
            a.record("r", 0, s);
        }
        a.record_foreign();
        let back: Audit = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            (back.duplicates(), back.out_of_order(), back.foreign),
            (1, 1, 1)
        );
    }

    #[test]
    fn merging_two_consumers_counts_overlap_as_duplicates() {
        let mut a = Audit::default();
        let mut b = Audit::default();
        for s in 0..10 {
            a.record("r", 0, s);
        }
        for s in 5..15 {
            b.record("r", 1, s);
        }
        a.merge(&b).unwrap();
        assert_eq!(a.distinct(), 15);
        assert_eq!(a.duplicates(), 5);
        assert_eq!(a.gaps(), 0);
    }
}
