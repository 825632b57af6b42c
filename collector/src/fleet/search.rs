//! Finding any terminal of the fleet, not only those with problems: by a free text that any of
//! its id, merchant, model, region, carrier or extra label values (a serial number is one)
//! holds, by exact label values and by readiness; in terminal-id order, paged by offset or by
//! a cursor (the last id of the previous page).
//!
//! Fast at a million terminals: without a filter a page is read off the sorted index of ids
//! ([`Fleet::ids`], kept as terminals are added) without looking at the others; with a filter,
//! one pass over the shards keeps only the matching ids, and only the page's terminals are
//! read in full by the caller.
//!
//! No IO and no clock.

use std::sync::Arc;

use posmon_diagnosis::readiness::{PaymentRoles, Readiness};

use super::{lock, Fleet, Terminal};

/// What a terminal search asks for; every part given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TerminalQuery {
    /// Held (ignoring case) by the id or one of the label values.
    text: Option<String>,
    pub region: Option<String>,
    pub carrier: Option<String>,
    pub model: Option<String>,
    pub merchant: Option<String>,
    /// An extra label's key and exact value.
    pub label: Option<(String, String)>,
    pub readiness: Option<Readiness>,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Terminals that match, in all.
    pub total: usize,
    /// The page's terminal ids, in order.
    pub ids: Vec<Arc<str>>,
}

/// `needle` (already lower case) in `haystack`, ignoring case.
fn holds(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() {
        let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
        needle.is_empty()
            || haystack
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

impl TerminalQuery {
    /// Sets the free text (blank: none).
    pub fn with_text(mut self, text: &str) -> Self {
        let text = text.trim();
        self.text = (!text.is_empty()).then(|| text.to_lowercase());
        self
    }

    pub fn is_empty(&self) -> bool {
        *self == TerminalQuery::default()
    }

    pub fn matches(&self, terminal: &Terminal, roles: &PaymentRoles) -> bool {
        let labels = &terminal.labels;
        let exact = |wanted: &Option<String>, value: &Option<Arc<str>>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| value.as_deref() == Some(wanted))
        };
        if !(exact(&self.region, &labels.region)
            && exact(&self.carrier, &labels.carrier)
            && exact(&self.model, &labels.model)
            && exact(&self.merchant, &labels.merchant))
        {
            return false;
        }
        if let Some((key, value)) = &self.label {
            if !labels
                .extra
                .iter()
                .any(|(k, v)| **k == **key && **v == **value)
            {
                return false;
            }
        }
        if let Some(text) = &self.text {
            let found = holds(&terminal.id, text)
                || [
                    &labels.merchant,
                    &labels.model,
                    &labels.region,
                    &labels.carrier,
                ]
                .into_iter()
                .flatten()
                .any(|value| holds(value, text))
                || labels.extra.iter().any(|(_, value)| holds(value, text));
            if !found {
                return false;
            }
        }
        self.readiness
            .is_none_or(|wanted| terminal.readiness(roles) == wanted)
    }
}

impl Fleet {
    /// The terminals `query` keeps, by id: the `limit` after `after` (exclusive; the previous
    /// page's last id) and `offset` more, with the count of all that match.
    pub fn search(
        &self,
        query: &TerminalQuery,
        roles: &PaymentRoles,
        after: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Page {
        let ids = self
            .ids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if query.is_empty() {
            let range = match after {
                Some(after) => ids.range::<str, _>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Unbounded,
                )),
                None => ids.range::<str, _>(..),
            };
            return Page {
                total: ids.len(),
                ids: range.skip(offset).take(limit).cloned().collect(),
            };
        }
        drop(ids);
        let mut matching: Vec<Arc<str>> = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            matching.extend(
                shard
                    .terminals
                    .values()
                    .filter(|terminal| query.matches(terminal, roles))
                    .map(|terminal| Arc::clone(&terminal.id)),
            );
        }
        matching.sort_unstable();
        let total = matching.len();
        let start = after.map_or(0, |after| matching.partition_point(|id| **id <= *after));
        Page {
            total,
            ids: matching
                .into_iter()
                .skip(start)
                .skip(offset)
                .take(limit)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Thresholds;
    use posmon_diagnosis::test_support::healthy_report;

    fn fleet() -> Fleet {
        let fleet = Fleet::new(10, 10);
        for (id, merchant, region, serial) in [
            ("T-0003", "Café Lumière", "cn-east", "SN-9A7B"),
            ("T-0001", "张记面馆", "cn-east", "SN-1234"),
            ("T-0002", "Bakery", "cn-west", "SN-5678"),
            ("X-0004", "bakery two", "cn-west", "sn-0004"),
        ] {
            let mut report = healthy_report();
            report.terminal_id = id.into();
            report.sequence = 1;
            report.labels.merchant = Some(merchant.into());
            report.labels.region = Some(region.into());
            report.labels.extra = [("serial".to_string(), serial.to_string())].into();
            fleet.apply_batch(
                id,
                vec![(report, vec![])],
                time::OffsetDateTime::now_utc(),
                &Thresholds::default(),
            );
        }
        fleet
    }

    fn check(
        query: TerminalQuery,
        after: Option<&str>,
        offset: usize,
        limit: usize,
        expected: (usize, &[&str]),
    ) {
        let page = fleet().search(&query, &PaymentRoles::default(), after, offset, limit);
        let ids: Vec<&str> = page.ids.iter().map(|id| &**id).collect();
        assert_eq!((page.total, ids.as_slice()), expected, "{query:?}");
    }

    #[test]
    fn searches_find_terminals_by_id_label_and_serial_in_id_order() {
        let all = TerminalQuery::default;
        check(
            all(),
            None,
            0,
            10,
            (4, &["T-0001", "T-0002", "T-0003", "X-0004"]),
        );
        check(all(), None, 1, 2, (4, &["T-0002", "T-0003"]));
        check(all(), Some("T-0002"), 0, 10, (4, &["T-0003", "X-0004"]));
        check(all(), Some("Z"), 0, 10, (4, &[]));
        // Free text: id, merchant (any case, any script), serial.
        check(
            all().with_text("t-000"),
            None,
            0,
            10,
            (3, &["T-0001", "T-0002", "T-0003"]),
        );
        check(
            all().with_text("BAKERY"),
            None,
            0,
            10,
            (2, &["T-0002", "X-0004"]),
        );
        check(all().with_text("面馆"), None, 0, 10, (1, &["T-0001"]));
        check(all().with_text("café"), None, 0, 10, (1, &["T-0003"]));
        check(all().with_text("sn-5678"), None, 0, 10, (1, &["T-0002"]));
        check(all().with_text("  "), None, 0, 1, (4, &["T-0001"]));
        check(all().with_text("nothing"), None, 0, 10, (0, &[]));
        // Exact labels, a cursor over a filtered list.
        let west = TerminalQuery {
            region: Some("cn-west".into()),
            ..all()
        };
        check(west.clone(), None, 0, 10, (2, &["T-0002", "X-0004"]));
        check(west, Some("T-0002"), 0, 10, (2, &["X-0004"]));
        let serial = TerminalQuery {
            label: Some(("serial".into(), "SN-1234".into())),
            ..all()
        };
        check(serial, None, 0, 10, (1, &["T-0001"]));
        let ready = TerminalQuery {
            readiness: Some(Readiness::CanPay),
            ..all()
        };
        check(
            ready,
            None,
            0,
            10,
            (4, &["T-0001", "T-0002", "T-0003", "X-0004"]),
        );
    }
}
