//! Certificate lifetimes.

use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

/// When a certificate is valid: `[not_before, not_after]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub not_before: OffsetDateTime,
    /// Last instant of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Longest lifetime accepted, in days (100 years).
    pub const MAX_DAYS: i64 = 36_500;

    /// Valid from a minute ago (tolerates small clock skew) for `days` days.
    pub fn days(days: i64) -> Result<Self> {
        if !(1..=Self::MAX_DAYS).contains(&days) {
            return Err(Error::InvalidLifetime { days });
        }
        let now = OffsetDateTime::now_utc();
        Ok(Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(days),
        })
    }

    /// An explicit period; `not_before` must precede `not_after`.
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self> {
        if not_before >= not_after {
            return Err(Error::EmptyValidity {
                not_before: rfc3339(not_before),
                not_after: rfc3339(not_after),
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }
}

/// RFC 3339 text of an instant (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
