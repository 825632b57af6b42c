//! Silences: for a while, findings that match are not sent (matching like routes). A finding
//! already sent stays "sent": nothing is said when it becomes silenced, and its resolution is
//! still told. Created and expired over the API; stored in the outbox's database.
//!
//! Pure: no IO, no clock (callers pass the time).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::matchers::{Facts, Matchers};

pub const COMMENT_MAX_CHARS: usize = 1000;
pub const CREATED_BY_MAX_CHARS: usize = 200;
/// The longest a silence may last.
pub const DURATION_MAX: Duration = Duration::days(366);
/// Most silences not yet expired.
pub const ACTIVE_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    pub matchers: Matchers,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub created_by: String,
    pub comment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Silence {
    pub fn state(&self, now: OffsetDateTime) -> &'static str {
        if now >= self.ends_at {
            "expired"
        } else if now < self.starts_at {
            "pending"
        } else {
            "active"
        }
    }

    pub fn silences(&self, facts: &Facts<'_>, now: OffsetDateTime) -> bool {
        self.state(now) == "active" && self.matchers.matches(facts)
    }
}

/// A silence as the API takes it: an end time or a duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: Matchers,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub duration_seconds: Option<u64>,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

impl NewSilence {
    /// The silence it describes, or the field at fault and the problem.
    pub fn into_silence(self, id: u64, now: OffsetDateTime) -> Result<Silence, (String, String)> {
        let fail = |field: &str, problem: &str| Err((field.to_string(), problem.to_string()));
        if self.matchers.is_empty() {
            return fail(
                "matchers",
                "must match something: a silence of everything hides every alert",
            );
        }
        self.matchers
            .validate()
            .map_err(|(field, problem)| (format!("matchers.{field}"), problem))?;
        if self.created_by.trim().is_empty()
            || self.created_by.chars().count() > CREATED_BY_MAX_CHARS
        {
            return fail(
                "created_by",
                &format!("must be 1 to {CREATED_BY_MAX_CHARS} characters"),
            );
        }
        if self.comment.chars().count() > COMMENT_MAX_CHARS {
            return fail(
                "comment",
                &format!("at most {COMMENT_MAX_CHARS} characters"),
            );
        }
        let starts_at = self.starts_at.unwrap_or(now).max(now);
        // A silence starts within the longest one from now, so every time it holds stays
        // far inside the calendar.
        if now
            .checked_add(DURATION_MAX)
            .is_none_or(|latest| starts_at > latest)
        {
            return fail("starts_at", "must be within 366 days from now");
        }
        let ends_at = match (self.ends_at, self.duration_seconds) {
            (Some(_), Some(_)) => {
                return fail("ends_at", "give ends_at or duration_seconds, not both")
            }
            (None, None) => return fail("ends_at", "give ends_at or duration_seconds"),
            (Some(ends_at), None) => ends_at,
            (None, Some(seconds)) => {
                let duration = i64::try_from(seconds)
                    .ok()
                    .map(Duration::seconds)
                    .filter(|duration| *duration <= DURATION_MAX);
                let Some(duration) = duration else {
                    return fail("duration_seconds", "a silence lasts at most 366 days");
                };
                if duration.is_zero() {
                    return fail("duration_seconds", "must be 1 or more");
                }
                match starts_at.checked_add(duration) {
                    Some(ends_at) => ends_at,
                    None => return fail("duration_seconds", "ends beyond the calendar"),
                }
            }
        };
        if ends_at <= starts_at {
            return fail("ends_at", "must be after starts_at and now");
        }
        if ends_at - starts_at > DURATION_MAX {
            return fail("ends_at", "a silence lasts at most 366 days");
        }
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at,
            ends_at,
            created_by: self.created_by.trim().to_string(),
            comment: self.comment,
            created_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn check(body: serde_json::Value, expected: Result<(&str, &str), &str>) {
        let now = datetime!(2026-11-26 02:00 UTC);
        let new: NewSilence = serde_json::from_value(body).unwrap();
        match (new.into_silence(1, now), expected) {
            (Ok(silence), Ok((starts, ends))) => {
                assert_eq!(silence.starts_at.to_string(), starts);
                assert_eq!(silence.ends_at.to_string(), ends);
            }
            (Err((field, _)), Err(expected_field)) => assert_eq!(field, expected_field),
            (got, expected) => panic!("{got:?} but expected {expected:?}"),
        }
    }

    #[test]
    fn new_silences_are_checked() {
        use serde_json::json;
        let region = json!({ "region": ["cn-east"] });
        check(
            json!({ "matchers": region, "duration_seconds": 3600, "created_by": "ops" }),
            Ok((
                "2026-11-26 2:00:00.0 +00:00:00",
                "2026-11-26 3:00:00.0 +00:00:00",
            )),
        );
        check(
            json!({ "matchers": region, "ends_at": "2026-11-26T04:00:00Z", "created_by": "ops" }),
            Ok((
                "2026-11-26 2:00:00.0 +00:00:00",
                "2026-11-26 4:00:00.0 +00:00:00",
            )),
        );
        check(
            json!({ "matchers": {}, "duration_seconds": 60, "created_by": "ops" }),
            Err("matchers"),
        );
        check(
            json!({ "matchers": { "code": ["nope"] }, "duration_seconds": 60, "created_by": "ops" }),
            Err("matchers.code[0]"),
        );
        check(
            json!({ "matchers": region, "created_by": "ops" }),
            Err("ends_at"),
        );
        check(
            json!({ "matchers": region, "ends_at": "2026-11-26T01:00:00Z", "created_by": "ops" }),
            Err("ends_at"),
        );
        check(
            json!({ "matchers": region, "duration_seconds": 60, "created_by": " " }),
            Err("created_by"),
        );
        check(
            json!({ "matchers": region, "duration_seconds": 40_000_000, "created_by": "ops" }),
            Err("duration_seconds"),
        );
        // Admin input at the ends of the calendar and of the numbers: refused, never a panic.
        let refused = [
            (json!({ "duration_seconds": u64::MAX }), "duration_seconds"),
            (json!({ "duration_seconds": i64::MAX }), "duration_seconds"),
            (json!({ "duration_seconds": 0 }), "duration_seconds"),
            (json!({ "ends_at": "9999-12-31T23:59:59Z" }), "ends_at"),
            (json!({ "ends_at": "0000-01-01T00:00:00Z" }), "ends_at"),
            (json!({ "ends_at": "2026-11-26T01:59:59Z" }), "ends_at"),
            (
                json!({ "starts_at": "9999-12-31T23:59:59Z", "duration_seconds": 3600 }),
                "starts_at",
            ),
            (
                json!({ "starts_at": "9999-12-31T00:00:00Z", "ends_at": "9999-12-31T23:59:59Z" }),
                "starts_at",
            ),
            (
                json!({ "starts_at": "2027-11-27T02:00:01Z", "duration_seconds": 60 }),
                "starts_at",
            ),
        ];
        for (times, field) in refused {
            let mut body = json!({ "matchers": region, "created_by": "ops" });
            for (key, value) in times.as_object().into_iter().flatten() {
                body[key] = value.clone();
            }
            check(body, Err(field));
        }
        check(
            json!({ "matchers": region, "duration_seconds": 366 * 86_400, "created_by": "ops",
                    "starts_at": "2027-11-27T02:00:00Z" }),
            Ok((
                "2027-11-27 2:00:00.0 +00:00:00",
                "2028-11-27 2:00:00.0 +00:00:00",
            )),
        );
    }

    #[test]
    fn a_year_minus_9999_date_is_refused_when_read() {
        // The JSON dates of the API hold years 0 to 9999: anything else fails to decode (a 400
        // naming the field), never reaches the arithmetic.
        let body = serde_json::json!({ "matchers": { "region": ["x"] }, "created_by": "ops",
                                       "ends_at": "-9999-01-01T00:00:00Z" });
        assert!(serde_json::from_value::<NewSilence>(body).is_err());
    }

    #[test]
    fn a_silence_is_active_between_its_start_and_end() {
        let now = datetime!(2026-11-26 02:00 UTC);
        let silence = NewSilence {
            matchers: Matchers {
                region: vec!["cn-east".into()],
                ..Matchers::default()
            },
            starts_at: Some(now + Duration::minutes(10)),
            ends_at: None,
            duration_seconds: Some(600),
            created_by: "ops".into(),
            comment: String::new(),
        }
        .into_silence(1, now)
        .unwrap();
        let facts = Facts {
            region: Some("cn-east"),
            ..Facts::default()
        };
        assert_eq!(silence.state(now), "pending");
        assert!(!silence.silences(&facts, now));
        assert!(silence.silences(&facts, now + Duration::minutes(15)));
        assert!(!silence.silences(
            &Facts {
                region: Some("cn-west"),
                ..facts
            },
            now + Duration::minutes(15)
        ));
        assert_eq!(silence.state(now + Duration::minutes(20)), "expired");
    }
}
