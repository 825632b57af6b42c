//! Silences: for a while, findings that match are not sent (matching like routes). A finding
//! already sent stays "sent": nothing is said when it becomes silenced, and its resolution is
//! still told. Created and expired over the API; stored in the outbox's database.
//!
//! Pure: no IO, no clock (callers pass the time).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::matchers::Matchers;

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
    /// A recurring maintenance window: the silence holds only within its windows, from
    /// `starts_at` (the first window's start) until `ends_at` (the end of the series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
}

/// How a maintenance window recurs: every day or on some weekdays, at the time of day of the
/// silence's `starts_at` in a fixed UTC offset (so "02:00 Beijing time" is `+480`), for
/// `duration_seconds` each time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    pub every: Every,
    /// For `weekly`: the days (`mon` … `sun`); none: the weekday of `starts_at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<Day>,
    pub duration_seconds: u64,
    /// The offset of the local time the windows follow, in minutes east of UTC.
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    Daily,
    Weekly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn of(weekday: time::Weekday) -> Day {
        match weekday {
            time::Weekday::Monday => Day::Mon,
            time::Weekday::Tuesday => Day::Tue,
            time::Weekday::Wednesday => Day::Wed,
            time::Weekday::Thursday => Day::Thu,
            time::Weekday::Friday => Day::Fri,
            time::Weekday::Saturday => Day::Sat,
            time::Weekday::Sunday => Day::Sun,
        }
    }
}

/// The longest one window of a recurring silence lasts.
pub const WINDOW_MAX: Duration = Duration::days(7);
/// The widest UTC offset a recurrence may follow (±14 h, the calendar's widest).
pub const UTC_OFFSET_MAX_MINUTES: i16 = 14 * 60;

impl Recurrence {
    fn window(&self) -> Duration {
        Duration::seconds(i64::try_from(self.duration_seconds).unwrap_or(i64::MAX))
    }

    fn offset(&self) -> Duration {
        Duration::minutes(i64::from(self.utc_offset_minutes))
    }

    /// Whether a window starts on `date` (local), given the series' first day.
    fn on(&self, date: time::Date, first: time::Date) -> bool {
        match self.every {
            Every::Daily => true,
            Every::Weekly if self.weekdays.is_empty() => date.weekday() == first.weekday(),
            Every::Weekly => self.weekdays.contains(&Day::of(date.weekday())),
        }
    }

    /// The starts (UTC) of the windows of the series `[starts_at, ends_at)` that begin on the
    /// local days from `from` to `to` (inclusive), in order. Checked arithmetic: nothing
    /// beyond the calendar.
    fn starts(
        &self,
        starts_at: OffsetDateTime,
        ends_at: OffsetDateTime,
        from: time::Date,
        to: time::Date,
    ) -> Vec<OffsetDateTime> {
        let Some(local_first) = starts_at.checked_add(self.offset()) else {
            return Vec::new();
        };
        let time_of_day = local_first.time();
        let mut starts = Vec::new();
        let mut day = from.max(local_first.date());
        while day <= to {
            if self.on(day, local_first.date()) {
                let start = day
                    .with_time(time_of_day)
                    .assume_utc()
                    .checked_sub(self.offset());
                if let Some(start) = start.filter(|start| *start >= starts_at && *start < ends_at) {
                    starts.push(start);
                }
            }
            match day.next_day() {
                Some(next) => day = next,
                None => break,
            }
        }
        starts
    }
}

impl Silence {
    /// `expired` after the end (of the series), `pending` before the start, `active` while
    /// it holds; a recurring one between windows is `scheduled`.
    pub fn state(&self, now: OffsetDateTime) -> &'static str {
        if now >= self.ends_at {
            "expired"
        } else if now < self.starts_at {
            "pending"
        } else if self.recurrence.is_some() && self.current_window(now).is_none() {
            "scheduled"
        } else {
            "active"
        }
    }

    /// For a recurring silence, the window holding `now`: (start, end).
    pub fn current_window(&self, now: OffsetDateTime) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let recurrence = self.recurrence.as_ref()?;
        let local = now.checked_add(recurrence.offset())?.date();
        // Windows that began up to the longest window ago may still hold.
        let from = local.checked_sub(WINDOW_MAX + Duration::days(1))?;
        recurrence
            .starts(self.starts_at, self.ends_at, from, local)
            .into_iter()
            .rev()
            .map(|start| {
                let end = start
                    .checked_add(recurrence.window())
                    .unwrap_or(self.ends_at);
                (start, end.min(self.ends_at))
            })
            .find(|(start, end)| *start <= now && now < *end)
    }

    /// The next window to begin after `now` (within two weeks), for a recurring silence; the
    /// silence's start for a one-off one not begun yet.
    pub fn next_start(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let Some(recurrence) = &self.recurrence else {
            return (now < self.starts_at).then_some(self.starts_at);
        };
        let local = now.checked_add(recurrence.offset())?.date();
        let first = self.starts_at.checked_add(recurrence.offset())?.date();
        let from = local.max(first);
        let to = from.checked_add(Duration::days(14))?;
        recurrence
            .starts(self.starts_at, self.ends_at, from, to)
            .into_iter()
            .find(|start| *start > now)
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
    /// Who made it: the API sets it to the actor's name, whatever the body says.
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    /// A recurring maintenance window (`ends_at` or `duration_seconds` then end the series).
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
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
        // A recurring window keeps its first start, past or not: it sets the time of day.
        let starts_at = match self.recurrence {
            Some(_) => self.starts_at.unwrap_or(now),
            None => self.starts_at.unwrap_or(now).max(now),
        };
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
        if let Some(recurrence) = &self.recurrence {
            let window = i64::try_from(recurrence.duration_seconds)
                .ok()
                .map(Duration::seconds)
                .filter(|window| !window.is_zero() && *window <= WINDOW_MAX);
            if window.is_none() {
                return fail(
                    "recurrence.duration_seconds",
                    "a window lasts from 1 second to 7 days",
                );
            }
            if recurrence.utc_offset_minutes.abs() > UTC_OFFSET_MAX_MINUTES {
                return fail(
                    "recurrence.utc_offset_minutes",
                    "must be from -840 to 840 minutes",
                );
            }
            if recurrence.every == Every::Daily && !recurrence.weekdays.is_empty() {
                return fail("recurrence.weekdays", "only a weekly window names weekdays");
            }
            let mut days = recurrence.weekdays.clone();
            days.sort_unstable_by_key(|day| *day as u8);
            days.dedup();
            if days.len() != recurrence.weekdays.len() {
                return fail("recurrence.weekdays", "names a day twice");
            }
            if ends_at <= now {
                return fail("ends_at", "the series must end after now");
            }
        }
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at,
            ends_at,
            created_by: self.created_by.trim().to_string(),
            comment: self.comment,
            created_at: now,
            recurrence: self.recurrence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::matchers::Facts;
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
    fn a_recurring_window_holds_at_its_time_of_day_in_its_offset() {
        use serde_json::json;
        // Every night 02:00-04:00 Beijing time (18:00-20:00 UTC), for 30 days, made at 10:00
        // UTC from a first window in the past.
        let now = datetime!(2026-11-26 10:00 UTC);
        let new: NewSilence = serde_json::from_value(json!({
            "matchers": { "region": ["cn-east"] },
            "starts_at": "2026-11-25T18:00:00Z",
            "duration_seconds": 30 * 86400,
            "created_by": "ops",
            "recurrence": { "every": "daily", "duration_seconds": 7200, "utc_offset_minutes": 480 }
        }))
        .unwrap();
        let silence = new.into_silence(1, now).unwrap();
        let at = |text: &str| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
        };
        for (time, state) in [
            ("2026-11-26T10:00:00Z", "scheduled"),
            ("2026-11-26T17:59:59Z", "scheduled"),
            ("2026-11-26T18:00:00Z", "active"),
            ("2026-11-26T19:59:59Z", "active"),
            ("2026-11-26T20:00:00Z", "scheduled"),
            ("2026-12-24T18:30:00Z", "active"),
            ("2026-12-25T18:30:00Z", "expired"),
        ] {
            assert_eq!(silence.state(at(time)), state, "{time}");
        }
        assert_eq!(
            silence.next_start(at("2026-11-26T10:00:00Z")),
            Some(at("2026-11-26T18:00:00Z"))
        );
        assert_eq!(
            silence.current_window(at("2026-11-26T19:00:00Z")),
            Some((at("2026-11-26T18:00:00Z"), at("2026-11-26T20:00:00Z")))
        );
        // Weekly on Saturdays and Sundays, a window across midnight UTC.
        let weekly = Silence {
            recurrence: Some(Recurrence {
                every: Every::Weekly,
                weekdays: vec![Day::Sat, Day::Sun],
                duration_seconds: 4 * 3600,
                utc_offset_minutes: 0,
            }),
            starts_at: at("2026-11-01T22:00:00Z"),
            ends_at: at("2027-01-01T00:00:00Z"),
            ..silence.clone()
        };
        // 2026-11-28 is a Saturday.
        for (time, state) in [
            ("2026-11-27T23:00:00Z", "scheduled"),
            ("2026-11-28T23:00:00Z", "active"),
            ("2026-11-29T01:59:59Z", "active"),
            ("2026-11-29T02:00:00Z", "scheduled"),
            ("2026-11-30T01:00:00Z", "active"),
            ("2026-11-30T23:00:00Z", "scheduled"),
        ] {
            assert_eq!(weekly.state(at(time)), state, "{time}");
        }
        // Bad recurrences name their field.
        for (recurrence, field) in [
            (
                json!({ "every": "daily", "duration_seconds": 0 }),
                "recurrence.duration_seconds",
            ),
            (
                json!({ "every": "daily", "duration_seconds": 700_000 }),
                "recurrence.duration_seconds",
            ),
            (
                json!({ "every": "daily", "duration_seconds": 60, "utc_offset_minutes": 900 }),
                "recurrence.utc_offset_minutes",
            ),
            (
                json!({ "every": "daily", "weekdays": ["mon"], "duration_seconds": 60 }),
                "recurrence.weekdays",
            ),
        ] {
            let new: NewSilence = serde_json::from_value(json!({
                "matchers": { "region": ["cn-east"] }, "duration_seconds": 86400,
                "created_by": "ops", "recurrence": recurrence
            }))
            .unwrap();
            assert_eq!(new.into_silence(1, now).unwrap_err().0, field);
        }
        // A series already over, a day named twice.
        for (body, field) in [
            (
                json!({ "matchers": { "region": ["cn-east"] }, "starts_at": "2026-11-01T18:00:00Z",
                     "ends_at": "2026-11-20T00:00:00Z", "created_by": "ops",
                     "recurrence": { "every": "daily", "duration_seconds": 60 } }),
                "ends_at",
            ),
            (
                json!({ "matchers": { "region": ["cn-east"] }, "duration_seconds": 86400, "created_by": "ops",
                     "recurrence": { "every": "weekly", "weekdays": ["mon", "mon"], "duration_seconds": 60 } }),
                "recurrence.weekdays",
            ),
        ] {
            let new: NewSilence = serde_json::from_value(body).unwrap();
            assert_eq!(new.into_silence(1, now).unwrap_err().0, field);
        }
        // A series starting in a month: its first window is the next.
        let later: NewSilence = serde_json::from_value(json!({
            "matchers": { "region": ["cn-east"] }, "starts_at": "2026-12-26T18:00:00Z",
            "duration_seconds": 86400 * 3, "created_by": "ops",
            "recurrence": { "every": "daily", "duration_seconds": 7200 } }))
        .unwrap();
        let later = later.into_silence(1, now).unwrap();
        assert_eq!(later.next_start(now), Some(at("2026-12-26T18:00:00Z")));
        // The edges of the calendar: no panic, nothing active.
        let edge = Silence {
            starts_at: datetime!(9999-12-31 00:00 UTC),
            ends_at: datetime!(9999-12-31 23:59 UTC),
            ..weekly.clone()
        };
        assert_eq!(edge.state(datetime!(9999-12-31 12:00 UTC)), "scheduled");
        assert_eq!(edge.next_start(datetime!(9999-12-31 12:00 UTC)), None);
        let early = Silence {
            starts_at: datetime!(-9999-01-01 00:00 UTC),
            ends_at: datetime!(-9999-01-02 00:00 UTC),
            ..silence
        };
        assert_eq!(early.state(datetime!(-9999-01-01 12:00 UTC)), "scheduled");
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
            recurrence: None,
        }
        .into_silence(1, now)
        .unwrap();
        let facts = Facts {
            region: Some("cn-east"),
            ..Facts::default()
        };
        assert_eq!(silence.state(now), "pending");
        let silences = |at| silence.state(at) == "active" && silence.matchers.matches(&facts);
        assert!(!silences(now));
        assert!(silences(now + Duration::minutes(15)));
        assert!(!silence.matchers.matches(&Facts {
            region: Some("cn-west"),
            ..facts
        }));
        assert_eq!(silence.state(now + Duration::minutes(20)), "expired");
    }
}
